// CPU kernels of the pyrobust::mix family.
//
// Per sample the two 1-D profiles are computed once (O(H + W)); the pass over the images then
// reads each of the two inputs once and writes the output once, rows in parallel, each row
// blended by one of the paths of blend_rows.h. For channels-last images a row is (W * C)
// contiguous values, so the x-profile is expanded per channel and the inner loop stays one
// contiguous, branch-free, vectorisable loop.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ops/cpu/blend_rows.h"
#include "ops/mix.h"

namespace pyrobust {
namespace {

// One sample's profile along one axis: out[k] = mask_profile(mode, p, axis, k), k < length.
// The gaussian walks out from its peak on the ratio of neighbours, g(u + 1) / g(u) =
// exp(-(2d + 1) / (2 s^2)) for d = u - c, whose own ratio is the constant exp(-1 / s^2): three
// exps a row instead of one a value, in double. The rounding of that constant compounds about
// k^2 / 2 times k steps from the peak: ~1e-12 relative at 224 pixels, ~6e-11 at 4096, far below
// the one rounding to float. Values only fall away from the peak (the peak pixel is the one
// nearest the centre, clamped to the row, even for a centre far off it), so nothing overflows.
// The other families are cheap as they are.
void profile_row(MaskMode mode, const float* p, int axis, int64_t length, float* out) {
  const double c = p[axis];
  const double s = p[2 + axis];
  if (mode != MaskMode::kGaussian || length < 3 || !std::isfinite(c) || !(s > 0.0)) {
    for (int64_t k = 0; k < length; ++k) out[k] = mask_profile(mode, p, axis, k);
    return;
  }
  const double a = 1.0 / (2.0 * s * s);
  const double q = std::exp(-2.0 * a);
  // Clamped before the conversion: a centre beyond int64's range has no integer floor.
  const int64_t peak =
      static_cast<int64_t>(std::clamp(std::floor(c), 0.0, static_cast<double>(length - 1)));
  const double d = static_cast<double>(peak) + 0.5 - c;
  const double top = std::exp(-(d * d) / (2.0 * s * s));
  out[peak] = static_cast<float>(top);
  double g = top, r = std::exp(-a * (2.0 * d + 1.0));
  for (int64_t k = peak + 1; k < length; ++k, r *= q) out[k] = static_cast<float>(g *= r);
  g = top, r = std::exp(-a * (1.0 - 2.0 * d));
  for (int64_t k = peak - 1; k >= 0; --k, r *= q) out[k] = static_cast<float>(g *= r);
}

// Samples per parallel task for per-sample work of `values` values each (a profile value, a
// target): tasks of ~32k values, so a small batch runs inline, waking no second thread, which
// costs more than the whole job for tiny images (docs/kernels.md, "Threads").
int64_t samples_per_task(int64_t values) {
  constexpr int64_t kTaskValues = 32768;
  return std::max<int64_t>(1, kTaskValues / std::max<int64_t>(1, values));
}

// Profiles for all samples: gy (N, H) and gx expanded to the row's inner length (N, inner).
// Sample i in profile modes[i] (a sample whose mode is negative is skipped), or all in `mode`.
void fill_profiles(const float* params, MaskMode mode, const Layout& lay, float* gy, float* gx,
                   const int64_t* modes = nullptr) {
  const int64_t inner = lay.inner();
  const int64_t reps = lay.channels_last ? lay.c : 1;
  at::parallel_for(0, lay.n, samples_per_task(lay.h + inner), [&](int64_t begin, int64_t end) {
    std::vector<float> row(lay.w);
    for (int64_t i = begin; i < end; ++i) {
      if (modes != nullptr && modes[i] < 0) continue;
      const MaskMode m = modes != nullptr ? static_cast<MaskMode>(modes[i]) : mode;
      const float* p = params + i * kMixParams;
      profile_row(m, p, 1, lay.h, gy + i * lay.h);
      profile_row(m, p, 0, lay.w, row.data());
      for (int64_t x = 0; x < lay.w; ++x) {
        for (int64_t r = 0; r < reps; ++r) gx[i * inner + x * reps + r] = row[x];
      }
    }
  });
}

// The rows of mix.out and mix_gather.out: sample i's values start at src[i] (laid out as one
// sample of `lay`), the output is the batch `dst`. `may_stream`: a large output may be written
// with non-temporal stores (mix.out, whose output is usually a buffer written before and out of
// the caches); mix_gather.out's is usually a fresh shared-memory batch, whose pages the kernel
// zeroes through the caches on first touch, where a cached store costs less (docs/kernels.md).
template <typename T>
void mix_rows(const T* const* src, const int64_t* partner, const float* gy, const float* gx,
              const Layout& lay, bool invert, bool use_fill, double fill_value, bool may_stream,
              T* __restrict dst) {
  using A = typename Compute<T>::type;
  const int64_t rows = lay.rows();
  const int64_t inner = lay.inner();
  const int64_t sample = rows * inner;
  const A base = invert ? A(1) : A(0);
  const A sign = invert ? A(-1) : A(1);
  const A fill = static_cast<A>(fill_value);
  // Grain: about 32 KiB of output per task keeps threads busy without tiny tasks.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, inner * sizeof(T)));
  const bool avx2 = std::is_same<T, uint8_t>::value && u8_avx2_rows();
  const bool stream = may_stream && (std::is_same<T, float>::value || avx2) &&
                      lay.n * sample * int64_t(sizeof(T)) >= kStreamBytes;
  at::parallel_for(0, lay.n * rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row / rows;
      const int64_t r = row % rows;
      const int64_t yy = r % lay.h;
      const A gyv = static_cast<A>(gy[i * lay.h + yy]) * sign;
      const T* a = src[i] + r * inner;
      T* o = dst + i * sample + r * inner;
      if (!use_fill && partner[i] == i) {
        // G x + (1 - G) x is x, but not bit for bit in floating point: copy unmixed samples.
        std::copy(a, a + inner, o);
        continue;
      }
      const T* b = use_fill ? nullptr : src[partner[i]] + r * inner;
      if constexpr (std::is_same<T, float>::value) {
        if (stream) {
          blend_row_stream(a, b, fill, gx + i * inner, base, gyv, o, inner);
          continue;
        }
      }
      if constexpr (std::is_same<T, uint8_t>::value) {
        if (avx2) {
          if (stream) {
            blend_row_u8_avx2_stream(a, b, fill, gx + i * inner, base, gyv, o, inner);
          } else {
            blend_row_u8_avx2(a, b, fill, gx + i * inner, base, gyv, o, inner);
          }
          continue;
        }
      }
      blend_row(a, b, fill, gx + i * inner, base, gyv, o, inner);
    }
    if (stream) stream_fence();  // order this task's streaming stores before the op returns
  });
}

at::Tensor& mix_out_cpu(const at::Tensor& images_in, const at::Tensor& partner_in,
                        const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                        std::optional<double> fill, at::Tensor& out) {
  const std::string mode_str(mode_name);
  const MaskMode mode = check_mix_args(images_in, partner_in, params_in, mode_str);
  check_mix_fill(fill);
  // A channels-last input stays as it is (suggest_memory_format keeps it), anything else is made
  // contiguous.
  const at::Tensor images = images_in.contiguous(images_in.suggest_memory_format());
  const Layout lay = layout_of(images);
  check_mix_out(images, out, lay);
  if (images.numel() == 0) return out;
  const at::Tensor partner = partner_in.contiguous();
  const at::Tensor params = params_in.contiguous();
  const int64_t n = lay.n;
  if (!fill.has_value()) check_partner_range(partner, n);
  std::vector<float> gy(n * lay.h), gx(n * lay.inner());
  fill_profiles(params.data_ptr<float>(), mode, lay, gy.data(), gx.data());
  const double fill_value = saturated_fill(fill.value_or(0.0), images.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND3(
      at::kByte, at::kHalf, at::kBFloat16, images.scalar_type(), "pyrobust_mix_cpu", [&] {
        const scalar_t* base = images.data_ptr<scalar_t>();
        std::vector<const scalar_t*> src(n);
        for (int64_t i = 0; i < n; ++i) src[i] = base + i * lay.rows() * lay.inner();
        mix_rows<scalar_t>(src.data(), partner.data_ptr<int64_t>(), gy.data(), gx.data(), lay,
                           invert, fill.has_value(), fill_value, /*may_stream=*/true,
                           out.data_ptr<scalar_t>());
      });
  return out;
}

at::Tensor& mix_gather_out_cpu(at::TensorList samples, const at::Tensor& partner_in,
                               const at::Tensor& params_in, c10::string_view mode_name,
                               bool invert, std::optional<double> fill, at::Tensor& out) {
  const std::string mode_str(mode_name);
  const MaskMode mode = check_mix_gather_args(samples, partner_in, params_in, mode_str, out);
  check_mix_fill(fill);
  const Layout lay = layout_of(out);
  if (out.numel() == 0) return out;
  // Each sample in the layout of one row of out: (C, H, W) contiguous, or (H, W, C) for a
  // channels_last out. A sample already so (the usual case) is read where it lies.
  std::vector<at::Tensor> kept(lay.n);
  for (int64_t i = 0; i < lay.n; ++i) {
    kept[i] = lay.channels_last ? samples[i].permute({1, 2, 0}).contiguous()
                                : samples[i].contiguous();
  }
  const at::Tensor partner = partner_in.contiguous();
  const at::Tensor params = params_in.contiguous();
  if (!fill.has_value()) check_partner_range(partner, lay.n);
  std::vector<float> gy(lay.n * lay.h), gx(lay.n * lay.inner());
  fill_profiles(params.data_ptr<float>(), mode, lay, gy.data(), gx.data());
  const double fill_value = saturated_fill(fill.value_or(0.0), out.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND3(
      at::kByte, at::kHalf, at::kBFloat16, out.scalar_type(), "pyrobust_mix_gather_cpu", [&] {
        std::vector<const scalar_t*> src(lay.n);
        for (int64_t i = 0; i < lay.n; ++i) src[i] = kept[i].data_ptr<scalar_t>();
        mix_rows<scalar_t>(src.data(), partner.data_ptr<int64_t>(), gy.data(), gx.data(), lay,
                           invert, fill.has_value(), fill_value, /*may_stream=*/false,
                           out.data_ptr<scalar_t>());
      });
  return out;
}

// One row of a pair's blend, o = g a + (1 - g) b with g = base + gy * gx[k]: the rows of mix.out
// (the cached ones: a pair's rows are written back where they were just read).
template <typename T, typename A>
inline void pair_row(const T* a, const T* b, const float* gx, A base, A gy, T* o, int64_t n) {
  if constexpr (std::is_same<T, uint8_t>::value) {
    if (u8_avx2_rows()) {
      blend_row_u8_avx2(a, b, 0.f, gx, base, gy, o, n);
      return;
    }
  }
  blend_row(a, b, A(0), gx, base, gy, o, n);
}

// The values [lo, hi) of each sample's row a mix_pairs_ call must visit. Where gx = 0 an
// inverted mask is 1 - gy * 0 = 1: the sample keeps its values (outside a box, or beyond a soft
// square's edge). Every profile is unimodal along a row, so its nonzero values are one run;
// a mask that is not inverted visits the whole row, and an unmixed sample none of it.
void pair_spans(const int64_t* modes, const bool* invert, const float* gx, const Layout& lay,
                int64_t* lo, int64_t* hi) {
  const int64_t inner = lay.inner();
  for (int64_t i = 0; i < lay.n; ++i) {
    lo[i] = 0;
    hi[i] = modes[i] >= 0 ? inner : 0;
    if (modes[i] < 0 || !invert[i]) continue;
    const float* g = gx + i * inner;
    while (lo[i] < hi[i] && g[lo[i]] == 0.f) ++lo[i];
    while (hi[i] > lo[i] && g[hi[i] - 1] == 0.f) --hi[i];
  }
}

// pyrobust::mix_pairs_: rows of pairs (i, N - 1 - i) in parallel. Each row pair is blended a
// chunk at a time into two small buffers (in L1) before either row is written back, so the
// batch is read once and written once, and only within the pair's span (pair_spans): a box
// moves its columns, not whole rows.
template <typename T>
void mix_pair_rows(T* x, const int64_t* modes, const bool* invert, const float* gy,
                   const float* gx, const Layout& lay) {
  using A = typename Compute<T>::type;
  constexpr int64_t kChunk = 8192 / sizeof(T);
  const int64_t rows = lay.rows();
  const int64_t inner = lay.inner();
  const int64_t sample = rows * inner;
  const int64_t half = lay.n / 2;
  std::vector<int64_t> lo(lay.n), hi(lay.n);
  pair_spans(modes, invert, gx, lay, lo.data(), hi.data());
  const int64_t grain =
      std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 2 * inner * int64_t(sizeof(T))));
  at::parallel_for(0, half * rows, grain, [&](int64_t begin, int64_t end) {
    alignas(64) T ti[kChunk];
    alignas(64) T tj[kChunk];
    for (int64_t pr = begin; pr < end; ++pr) {
      const int64_t i = pr / rows;
      const int64_t j = lay.n - 1 - i;
      const int64_t r = pr % rows;
      const int64_t yy = r % lay.h;
      // A row whose inverted mask is 1 throughout (gy = 0: outside a box) keeps its values: it
      // is neither blended nor written, and a row pair with nothing to write is not even read.
      const bool mi = modes[i] >= 0 && !(invert[i] && gy[i * lay.h + yy] == 0.f);
      const bool mj = modes[j] >= 0 && !(invert[j] && gy[j * lay.h + yy] == 0.f);
      if (!mi && !mj) continue;
      T* a = x + i * sample + r * inner;
      T* b = x + j * sample + r * inner;
      const A base_i = invert[i] ? A(1) : A(0), base_j = invert[j] ? A(1) : A(0);
      const A gy_i = static_cast<A>(gy[i * lay.h + yy]) * (invert[i] ? A(-1) : A(1));
      const A gy_j = static_cast<A>(gy[j * lay.h + yy]) * (invert[j] ? A(-1) : A(1));
      // The union of the members' spans: a member kept outside its own span gets g = 1 there,
      // its own values written back.
      const int64_t from = std::min(mi ? lo[i] : inner, mj ? lo[j] : inner);
      const int64_t to = std::max(mi ? hi[i] : int64_t(0), mj ? hi[j] : int64_t(0));
      for (int64_t k = from; k < to; k += kChunk) {
        const int64_t m = std::min(kChunk, to - k);
        if (mi) pair_row<T, A>(a + k, b + k, gx + i * inner + k, base_i, gy_i, ti, m);
        if (mj) pair_row<T, A>(b + k, a + k, gx + j * inner + k, base_j, gy_j, tj, m);
        if (mi) std::copy(ti, ti + m, a + k);
        if (mj) std::copy(tj, tj + m, b + k);
      }
    }
  });
}

void mix_pairs_cpu(const at::Tensor& images, const at::Tensor& params_in,
                   const at::Tensor& modes_in, const at::Tensor& invert_in) {
  const Layout lay = check_mix_pairs_args(images, params_in, modes_in, invert_in);
  TORCH_CHECK(params_in.is_cpu(), "params should be on the CPU for CPU images, got ",
              params_in.device());
  if (images.numel() == 0 || lay.n < 2) return;
  const at::Tensor params = params_in.contiguous();
  const at::Tensor modes = modes_in.contiguous();
  const at::Tensor invert = invert_in.contiguous();
  std::vector<float> gy(lay.n * lay.h), gx(lay.n * lay.inner());
  fill_profiles(params.data_ptr<float>(), MaskMode::kConstant, lay, gy.data(), gx.data(),
                modes.data_ptr<int64_t>());
  AT_DISPATCH_FLOATING_TYPES_AND3(
      at::kByte, at::kHalf, at::kBFloat16, images.scalar_type(), "pyrobust_mix_pairs_cpu", [&] {
        mix_pair_rows<scalar_t>(images.data_ptr<scalar_t>(), modes.data_ptr<int64_t>(),
                                invert.data_ptr<bool>(), gy.data(), gx.data(), lay);
      });
}

at::Tensor mix_mask_cpu(const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                        int64_t height, int64_t width) {
  const MaskMode mode = check_mask_args(params_in, std::string(mode_name), height, width, false);
  const at::Tensor params = params_in.contiguous();
  const int64_t n = params.size(0);
  at::Tensor masks = at::empty({n, height, width}, params.options());
  const Layout lay{false, n, 1, height, width};
  std::vector<float> gy(n * height), gx(n * width);
  fill_profiles(params.data_ptr<float>(), mode, lay, gy.data(), gx.data());
  float* m = masks.data_ptr<float>();
  const float base = invert ? 1.f : 0.f, sign = invert ? -1.f : 1.f;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x)
        m[(i * height + y) * width + x] = base + sign * gy[i * height + y] * gx[i * width + x];
  return masks;
}

// mean(G) of one sample, exact from its two profiles (double sums of the float values the blend
// applies): O(H + W). `scratch` holds max(H, W) floats.
double mask_mean(MaskMode mode, const float* p, bool invert, int64_t height, int64_t width,
                 std::vector<float>& scratch) {
  double sy = 0, sx = 0;
  profile_row(mode, p, 1, height, scratch.data());
  for (int64_t y = 0; y < height; ++y) sy += scratch[y];
  profile_row(mode, p, 0, width, scratch.data());
  for (int64_t x = 0; x < width; ++x) sx += scratch[x];
  const double mean = sy * sx / (static_cast<double>(height) * width);
  return invert ? 1.0 - mean : mean;
}

at::Tensor mix_lambda_cpu(const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                          int64_t height, int64_t width) {
  const MaskMode mode = check_mask_args(params_in, std::string(mode_name), height, width, true);
  const at::Tensor params = params_in.contiguous();
  const int64_t n = params.size(0);
  at::Tensor lam = at::empty({n}, params.options());
  const float* p = params.data_ptr<float>();
  float* l = lam.data_ptr<float>();
  at::parallel_for(0, n, samples_per_task(height + width), [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(std::max(height, width));
    for (int64_t i = begin; i < end; ++i) {
      l[i] = static_cast<float>(mask_mean(mode, p + i * kMixParams, invert, height, width,
                                          scratch));
    }
  });
  return lam;
}

std::tuple<at::Tensor, at::Tensor> mix_targets_cpu(
    const at::Tensor& images, const at::Tensor& labels_in, const at::Tensor& partner_in,
    const at::Tensor& params_in, c10::string_view mode_name, bool invert, int64_t num_classes,
    double label_smoothing, bool mix_labels) {
  const std::string mode_str(mode_name);
  const MaskMode mode = check_targets_args(images, labels_in, partner_in, params_in, mode_str,
                                           num_classes, label_smoothing);
  const int64_t n = images.size(0), height = images.size(2), width = images.size(3);
  const at::Tensor labels = labels_in.to(at::kLong).contiguous();
  const at::Tensor partner = partner_in.contiguous();
  const at::Tensor params = params_in.contiguous();
  if (mix_labels) check_partner_range(partner, n);
  const auto opts = params.options();
  at::Tensor targets = at::empty({n, num_classes}, opts);
  at::Tensor lam = at::empty({n}, opts);
  const TargetWeights tw = target_weights(label_smoothing, num_classes);
  const int64_t* y = labels.data_ptr<int64_t>();
  const int64_t* j = partner.data_ptr<int64_t>();
  const float* p = params.data_ptr<float>();
  float* t = targets.data_ptr<float>();
  float* l = lam.data_ptr<float>();
  const int64_t grain = samples_per_task(2 * (height + width) + num_classes);
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(std::max(height, width));
    for (int64_t i = begin; i < end; ++i) {
      // A sample paired with itself is copied unmixed (its mask is moot): lam = 1.
      const int64_t ji = mix_labels ? j[i] : i;
      const bool mixed = ji != i && height > 0 && width > 0;
      const float li =
          mixed ? static_cast<float>(
                      mask_mean(mode, p + i * kMixParams, invert, height, width, scratch))
                : 1.f;
      l[i] = li;
      // The own label's weight, then the partner's, each rounded to float32 and added in that
      // order, as the CUDA kernel does. volatile keeps each product rounded on its own: a
      // compiler free to contract (GCC's default where FMA exists) would fuse it into the add.
      float* row = t + i * num_classes;
      std::fill(row, row + num_classes, tw.floor);
      const volatile float own = li * tw.keep;
      row[y[i]] += own;
      if (mixed) {
        const volatile float other = (1.f - li) * tw.keep;
        row[y[ji]] += other;
      }
    }
  });
  return {targets, lam};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, CPU, m) {
  m.impl("mix.out", &mix_out_cpu);
  m.impl("mix_mask", &mix_mask_cpu);
  m.impl("mix_lambda", &mix_lambda_cpu);
  m.impl("mix_targets", &mix_targets_cpu);
  m.impl("mix_pairs_", &mix_pairs_cpu);
  m.impl("mix_gather.out", &mix_gather_out_cpu);
}

}  // namespace pyrobust
