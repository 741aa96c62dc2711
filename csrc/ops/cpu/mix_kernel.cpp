// CPU kernels of the pyrobust::mix family.
//
// Per sample the two 1-D profiles are computed once (O(H + W)); the pass over the images then
// reads each of the two inputs once and writes the output once, rows in parallel. For
// channels-last images a row is (W * C) contiguous values, so the x-profile is expanded per
// channel and the inner loop stays one contiguous, branch-free, vectorisable loop.
// The blend is written g * a + (1 - g) * b so that g = 1 and g = 0 copy a pixel exactly (an
// unmixed sample, the outside of a hard CutMix box) whatever the dtype.
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
#include <cstdlib>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "ops/cpu/simd.h"
#include "ops/mix.h"

namespace pyrobust {
namespace {

template <typename T, typename A>
inline T store(A v) {
  return static_cast<T>(v);
}
template <>
inline uint8_t store<uint8_t, float>(float v) {
  // Saturate to [0, 255], then round to nearest (ties up), as the CUDA kernel does. A blend of
  // two bytes with G in [0, 1] is in range already; a user's lam outside [0, 1] (constant mode)
  // is not. min / max and the float -> int32 -> byte conversion keep the loop vectorised.
  return static_cast<uint8_t>(static_cast<int32_t>(std::min(std::max(v, 0.0f), 255.0f) + 0.5f));
}

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
// target): tasks of ~32k values, so a small batch runs inline. Waking the second thread costs
// ~10-30 us here, more than the whole job for tiny images (a 64-sample call on 2x2 images took
// 108 us on 2 threads against 52 us on one with a fixed 8 or 16 samples a task).
int64_t samples_per_task(int64_t values) {
  constexpr int64_t kTaskValues = 32768;
  return std::max<int64_t>(1, kTaskValues / std::max<int64_t>(1, values));
}

// Profiles for all samples: gy (N, H) and gx expanded to the row's inner length (N, inner).
void fill_profiles(const float* params, MaskMode mode, const Layout& lay, float* gy, float* gx) {
  const int64_t inner = lay.inner();
  const int64_t reps = lay.channels_last ? lay.c : 1;
  at::parallel_for(0, lay.n, samples_per_task(lay.h + inner), [&](int64_t begin, int64_t end) {
    std::vector<float> row(lay.w);
    for (int64_t i = begin; i < end; ++i) {
      const float* p = params + i * kMixParams;
      profile_row(mode, p, 1, lay.h, gy + i * lay.h);
      profile_row(mode, p, 0, lay.w, row.data());
      for (int64_t x = 0; x < lay.w; ++x) {
        for (int64_t r = 0; r < reps; ++r) gx[i * inner + x * reps + r] = row[x];
      }
    }
  });
}

// One row of the blend: o = g a + (1 - g) b with g = base + gy * gx[k] (b = the fill value when
// b is null). Templates for every dtype; float32 and uint8, the loader's dtypes, also have
// overloads cloned for AVX2 (ops/cpu/simd.h): at the baseline ISA the uint8 <-> float
// conversions of the uint8 loop do not vectorise.
template <typename T, typename A = typename Compute<T>::type>
__attribute__((always_inline)) inline void blend_row(const T* __restrict a, const T* __restrict b,
                                                     A fill, const float* __restrict gx, A base,
                                                     A gy, T* __restrict o, int64_t n) {
  if (b == nullptr) {
    for (int64_t k = 0; k < n; ++k) {
      const A g = base + gy * static_cast<A>(gx[k]);
      o[k] = store<T, A>(g * static_cast<A>(a[k]) + (A(1) - g) * fill);
    }
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    const A g = base + gy * static_cast<A>(gx[k]);
    o[k] = store<T, A>(g * static_cast<A>(a[k]) + (A(1) - g) * static_cast<A>(b[k]));
  }
}

PYROBUST_CLONES void blend_row(const float* __restrict a, const float* __restrict b, float fill,
                               const float* __restrict gx, float base, float gy,
                               float* __restrict o, int64_t n) {
  blend_row<float, float>(a, b, fill, gx, base, gy, o, n);
}

PYROBUST_CLONES void blend_row(const uint8_t* __restrict a, const uint8_t* __restrict b,
                               float fill, const float* __restrict gx, float base, float gy,
                               uint8_t* __restrict o, int64_t n) {
  blend_row<uint8_t, float>(a, b, fill, gx, base, gy, o, n);
}

// float32 rows with non-temporal stores, for outputs far larger than the caches: writing around
// them saves the read-for-ownership of every output line, a quarter of a blend's memory traffic.
// SSE2 is the x86-64 baseline, so this needs no clone; 4-wide arithmetic is enough for a pass
// that memory bounds. The unaligned head and the tail go through blend_row; same arithmetic.
constexpr int64_t kStreamBytes = 8 << 20;

#if defined(__x86_64__)
void blend_row_stream(const float* a, const float* b, float fill, const float* gx, float base,
                      float gy, float* o, int64_t n) {
  int64_t k = 0;
  while (k < n && (reinterpret_cast<uintptr_t>(o + k) & 15) != 0) ++k;
  blend_row<float, float>(a, b, fill, gx, base, gy, o, k);
  const __m128 vbase = _mm_set1_ps(base), vgy = _mm_set1_ps(gy), vone = _mm_set1_ps(1.f);
  const __m128 vfill = _mm_set1_ps(fill);
  for (; k + 4 <= n; k += 4) {
    const __m128 g = _mm_add_ps(vbase, _mm_mul_ps(vgy, _mm_loadu_ps(gx + k)));
    const __m128 vb = b != nullptr ? _mm_loadu_ps(b + k) : vfill;
    const __m128 r = _mm_add_ps(_mm_mul_ps(g, _mm_loadu_ps(a + k)),
                                _mm_mul_ps(_mm_sub_ps(vone, g), vb));
    _mm_stream_ps(o + k, r);
  }
  blend_row<float, float>(a + k, b != nullptr ? b + k : nullptr, fill, gx + k, base, gy, o + k,
                          n - k);
}
inline void stream_fence() { _mm_sfence(); }
#endif

// uint8 rows with AVX2 and FMA intrinsics. GCC's own vectorisation of the uint8 blend_row spent
// most of its time widening and narrowing (bytes to words to dwords and back) and ran at 2.5 G
// values/s a thread in cache, so a uint8 batch was compute-bound at a fifth of its memory
// ceiling. Here 8 values widen with one vpmovzxbd and one conversion, 32 results narrow with two
// packs and a permute, and the blend is one FMA:
//     out = trunc(clamp(g (a - b) + (b + 1/2), 1/2, 255 + 1/2)),   g = base + gy gx[k]
// a - b and b + 1/2 are exact in float for bytes, so the value is rounded once (blend_row rounds
// g a, (1 - g) b and their sum): it is the round-half-up of the blend but where that single
// rounding carries a value within one float ulp below a .5 boundary across it, one level. g = 1
// and g = 0 still give a and b exactly. With `Stream`, outputs far larger than the caches are
// written around them (as blend_row_stream).
// (Plain target attributes, no ifunc: unlike PYROBUST_CLONES this also builds under ASan.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYROBUST_U8_AVX2 1
__attribute__((target("avx2,fma"), always_inline)) inline __m256 widen(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// The same arithmetic one value at a time, for a row's unaligned head and its tail.
__attribute__((target("avx2,fma"))) void blend_u8_fma(const uint8_t* a, const uint8_t* b,
                                                      float fill, const float* gx, float base,
                                                      float gy, uint8_t* o, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const float g = __builtin_fmaf(gy, gx[k], base);
    const float bv = b != nullptr ? static_cast<float>(b[k]) : fill;
    const float r = __builtin_fmaf(g, static_cast<float>(a[k]) - bv, bv + 0.5f);
    o[k] = static_cast<uint8_t>(static_cast<int32_t>(std::min(std::max(r, 0.5f), 255.5f)));
  }
}

template <bool Stream>
__attribute__((target("avx2,fma"))) void blend_row_u8_avx2(const uint8_t* a, const uint8_t* b,
                                                          float fill, const float* gx,
                                                          float base, float gy, uint8_t* o,
                                                          int64_t n) {
  int64_t k = 0;
  if (Stream) {
    while (k < n && (reinterpret_cast<uintptr_t>(o + k) & 31) != 0) ++k;
    blend_u8_fma(a, b, fill, gx, base, gy, o, k);
  }
  const __m256 vbase = _mm256_set1_ps(base), vgy = _mm256_set1_ps(gy);
  const __m256 vhalf = _mm256_set1_ps(0.5f), vfill = _mm256_set1_ps(fill);
  const __m256 vhigh = _mm256_set1_ps(255.5f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; k + 32 <= n; k += 32) {
    __m256i q[4];
    for (int u = 0; u < 4; ++u) {
      const __m256 g = _mm256_fmadd_ps(vgy, _mm256_loadu_ps(gx + k + 8 * u), vbase);
      const __m256 vb = b != nullptr ? widen(b + k + 8 * u) : vfill;
      const __m256 r = _mm256_fmadd_ps(g, _mm256_sub_ps(widen(a + k + 8 * u), vb),
                                       _mm256_add_ps(vb, vhalf));
      // Saturated as the tail and the other backends do (a float beyond int32's range would
      // convert to INT_MIN, and pack to 0), then truncated: r >= 0.5 rounds the blend half up.
      q[u] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, vhalf), vhigh));
    }
    // packus works within 128-bit lanes: the bytes come out as dwords 0 4 1 5 2 6 3 7.
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]),
                                              _mm256_packus_epi32(q[2], q[3]));
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, order);
    if (Stream) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(o + k), ordered);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), ordered);
    }
  }
  blend_u8_fma(a + k, b != nullptr ? b + k : nullptr, fill, gx + k, base, gy, o + k, n - k);
}

// ATEN_CPU_CAPABILITY=default, PyTorch's switch for its own kernels, also keeps these rows on
// the portable loop (how the tests reach it on an AVX2 machine). The PYROBUST_CLONES loops pick
// by the CPU alone.
bool cpu_has_avx2() {
  static const bool has = [] {
    const char* capability = std::getenv("ATEN_CPU_CAPABILITY");
    if (capability != nullptr && std::string(capability) == "default") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}
#endif

#if !defined(__x86_64__)
// No streaming stores elsewhere: the cached path.
void blend_row_stream(const float* a, const float* b, float fill, const float* gx, float base,
                      float gy, float* o, int64_t n) {
  blend_row(a, b, fill, gx, base, gy, o, n);
}
inline void stream_fence() {}
#endif

template <typename T>
void mix_rows(const T* __restrict src, const int64_t* partner, const float* gy, const float* gx,
              const Layout& lay, bool invert, bool use_fill, double fill_value,
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
#if defined(PYROBUST_U8_AVX2)
  const bool avx2 = std::is_same<T, uint8_t>::value && cpu_has_avx2();
#else
  const bool avx2 = false;
#endif
  const bool stream = (std::is_same<T, float>::value || avx2) &&
                      lay.n * sample * int64_t(sizeof(T)) >= kStreamBytes;
  at::parallel_for(0, lay.n * rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t i = row / rows;
      const int64_t r = row % rows;
      const int64_t yy = r % lay.h;
      const A gyv = static_cast<A>(gy[i * lay.h + yy]) * sign;
      const T* a = src + i * sample + r * inner;
      T* o = dst + i * sample + r * inner;
      if (!use_fill && partner[i] == i) {
        // G x + (1 - G) x is x, but not bit for bit in floating point: copy unmixed samples.
        std::copy(a, a + inner, o);
        continue;
      }
      const T* b = use_fill ? nullptr : src + partner[i] * sample + r * inner;
      if constexpr (std::is_same<T, float>::value) {
        if (stream) {
          blend_row_stream(a, b, fill, gx + i * inner, base, gyv, o, inner);
          continue;
        }
      }
#if defined(PYROBUST_U8_AVX2)
      if constexpr (std::is_same<T, uint8_t>::value) {
        if (avx2) {
          if (stream) {
            blend_row_u8_avx2<true>(a, b, fill, gx + i * inner, base, gyv, o, inner);
          } else {
            blend_row_u8_avx2<false>(a, b, fill, gx + i * inner, base, gyv, o, inner);
          }
          continue;
        }
      }
#endif
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
        mix_rows<scalar_t>(images.data_ptr<scalar_t>(), partner.data_ptr<int64_t>(), gy.data(),
                           gx.data(), lay, invert, fill.has_value(), fill_value,
                           out.data_ptr<scalar_t>());
      });
  return out;
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
}

}  // namespace pyrobust
