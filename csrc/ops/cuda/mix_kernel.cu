// CUDA kernels of the pyrobust::mix family.
//
// mix: two launches, a tiny one computing the 1-D profiles of every sample (N * (H + inner)
// floats, never an (N, C, H, W) mask), then one pass over the images, a warp per row.
// mix_targets: one launch, a block per sample (its lam from the profiles, then its targets row);
// mix_lambda the same lam, alone.
// Parameters drawn on the host reach the device in one packed copy per op, enqueued with the
// launches: a training loop's host never waits on these ops. Only the ATen headers the kernels
// need are included: a .cu including torch/extension.h takes minutes to compile per
// architecture.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ops/mix.h"

namespace pyrobust {
namespace {

constexpr int kThreads = 256;

template <typename T, typename A>
__device__ __forceinline__ T store(A v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ uint8_t store<uint8_t, float>(float v) {
  return static_cast<uint8_t>(fminf(fmaxf(v, 0.f), 255.f) + 0.5f);
}

// gy: (N, H); gx: (N, inner), the x-profile repeated per channel for channels-last rows. Sample
// i in profile modes[i] (skipped where negative) when `modes` is given, else all in `mode`.
__global__ void profiles_kernel(const float* __restrict__ params, MaskMode mode,
                                const int64_t* __restrict__ modes, int64_t n, int64_t h,
                                int64_t w, int64_t reps, float* __restrict__ gy,
                                float* __restrict__ gx) {
  const int64_t per = h + w * reps;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n * per;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = t / per;
    const int64_t k = t % per;
    if (modes != nullptr && modes[i] < 0) continue;
    if (modes != nullptr) mode = static_cast<MaskMode>(modes[i]);
    const float* p = params + i * kMixParams;
    if (k < h) {
      gy[i * h + k] = mask_profile(mode, p, 1, k);
    } else {
      const int64_t j = k - h;
      gx[i * w * reps + j] = mask_profile(mode, p, 0, j / reps);
    }
  }
}

// One warp per image row (a channel row when contiguous, a pixel row when channels-last): the
// row's sample, partner and y-profile value are found once, then the lanes blend the row's inner
// values, consecutive lanes on consecutive addresses. Each lane issues the loads of kUnroll
// strides before it blends any of them: with one stride's loads in flight, a warp keeps ~400
// bytes moving, too few to cover memory latency at an H200's bandwidth. The same arithmetic as
// the CPU's float rows: g a + (1 - g) b, exact copies at g = 0 and g = 1 (uint8 may differ from the
// CPU's AVX2 rows by one level at a .5 tie).
constexpr int kUnroll = 4;

template <typename T, typename A>
__device__ __forceinline__ T blend(A g, A av, A bv) {
  return store<T, A>(g * av + (A(1) - g) * bv);
}

template <typename T>
__global__ void mix_kernel(const T* __restrict__ src, const int64_t* __restrict__ partner,
                           const float* __restrict__ gy, const float* __restrict__ gx,
                           int64_t n, int64_t rows, int64_t inner, int64_t h, bool invert,
                           bool use_fill, double fill, T* __restrict__ dst) {
  using A = typename Compute<T>::type;
  const A base = invert ? A(1) : A(0);
  const A sign = invert ? A(-1) : A(1);
  const A fill_a = static_cast<A>(fill);
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
       row < n * rows; row += warps) {
    const int64_t i = row / rows;
    const int64_t r = row - i * rows;
    const int64_t j = use_fill ? i : partner[i];
    const T* a = src + row * inner;
    T* o = dst + row * inner;
    if (!use_fill && j == i) {  // a sample paired with itself is unmixed: copied bit for bit
#pragma unroll 4
      for (int64_t k = lane; k < inner; k += 32) o[k] = a[k];
      continue;
    }
    const T* b = src + (j * rows + r) * inner;
    const A gyv = static_cast<A>(gy[i * h + r % h]) * sign;
    const float* g_x = gx + i * inner;
    // Every step keeps up to kUnroll strides in flight, the row's last one too (guarded): a
    // 224-value row is two steps (128 + 96 values), not one step and three single strides.
    for (int64_t k0 = lane; k0 < inner; k0 += 32 * kUnroll) {
      A av[kUnroll] = {}, bv[kUnroll] = {}, gv[kUnroll] = {};
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + 32 * u;
        if (k < inner) {
          av[u] = static_cast<A>(a[k]);
          bv[u] = use_fill ? fill_a : static_cast<A>(b[k]);
          gv[u] = static_cast<A>(g_x[k]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + 32 * u;
        if (k < inner) o[k] = blend<T, A>(base + gyv * gv[u], av[u], bv[u]);
      }
    }
  }
}

// uint8 rows of a multiple of V bytes (4 or 16) whose rows start V-aligned: each lane moves V
// bytes of each input with one load (and V floats of the x-profile with V / 4 loads), so a warp
// keeps kUnroll x 32 x V bytes per input in flight where the byte-per-lane rows keep 4 x 32. The
// arithmetic is mix_kernel's, value for value: the results are bit-identical.
template <int V>
struct alignas(V) Bytes {
  uint8_t v[V];
};
template <int V>
struct alignas(4 * V) Floats {
  float v[V];
};

template <int V>
__global__ void mix_u8_vec_kernel(const uint8_t* __restrict__ src,
                                  const int64_t* __restrict__ partner,
                                  const float* __restrict__ gy, const float* __restrict__ gx,
                                  int64_t n, int64_t rows, int64_t inner, int64_t h, bool invert,
                                  bool use_fill, double fill, uint8_t* __restrict__ dst) {
  const float base = invert ? 1.f : 0.f;
  const float sign = invert ? -1.f : 1.f;
  const float fill_a = static_cast<float>(fill);
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
       row < n * rows; row += warps) {
    const int64_t i = row / rows;
    const int64_t r = row - i * rows;
    const int64_t j = use_fill ? i : partner[i];
    const auto* a = reinterpret_cast<const Bytes<V>*>(src + row * inner);
    auto* o = reinterpret_cast<Bytes<V>*>(dst + row * inner);
    const int64_t chunks = inner / V;
    if (!use_fill && j == i) {
#pragma unroll 4
      for (int64_t k = lane; k < chunks; k += 32) o[k] = a[k];
      continue;
    }
    const auto* b = reinterpret_cast<const Bytes<V>*>(src + (j * rows + r) * inner);
    const float gyv = gy[i * h + r % h] * sign;
    const auto* g_x = reinterpret_cast<const Floats<V>*>(gx + i * inner);
    for (int64_t k0 = lane; k0 < chunks; k0 += 32 * kUnroll) {
      Bytes<V> av[kUnroll], bv[kUnroll];
      Floats<V> gv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + 32 * u;
        if (k < chunks) {
          av[u] = a[k];
          if (!use_fill) bv[u] = b[k];
          gv[u] = g_x[k];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + 32 * u;
        if (k < chunks) {
          Bytes<V> out;
#pragma unroll
          for (int e = 0; e < V; ++e) {
            const float bf = use_fill ? fill_a : static_cast<float>(bv[u].v[e]);
            out.v[e] = blend<uint8_t, float>(base + gyv * gv[u].v[e],
                                             static_cast<float>(av[u].v[e]), bf);
          }
          o[k] = out;
        }
      }
    }
  }
}

// The bytes each lane of the uint8 rows moves at once: 16 or 4 where every row's length and
// start allow (the inputs, the output and the x-profile rows aligned to it), else 1.
int u8_vector_width(const at::Tensor& images, const at::Tensor& out, int64_t inner) {
  const auto aligned = [&](int v) {
    return inner % v == 0 && reinterpret_cast<uintptr_t>(images.data_ptr()) % v == 0 &&
           reinterpret_cast<uintptr_t>(out.data_ptr()) % v == 0;
  };
  if (aligned(16)) return 16;
  if (aligned(4)) return 4;
  return 1;
}

int blocks_for(int64_t work) {
  const int64_t sm = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, sm * 32)));
}

void compute_profiles(const at::Tensor& params, MaskMode mode, const Layout& lay, at::Tensor& gy,
                      at::Tensor& gx, const int64_t* modes = nullptr) {
  const int64_t reps = lay.channels_last ? lay.c : 1;
  gy = at::empty({lay.n, lay.h}, params.options());
  gx = at::empty({lay.n, lay.w * reps}, params.options());
  const int64_t work = lay.n * (lay.h + lay.w * reps);
  if (work == 0) return;
  profiles_kernel<<<blocks_for(work), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      params.data_ptr<float>(), mode, modes, lay.n, lay.h, lay.w, reps, gy.data_ptr<float>(),
      gx.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Every partner index in [0, n), or the op would read outside the batch. Host indices (the
// mixers') are checked on the host; indices already on the device cost one sync.
void check_partner(const at::Tensor& partner, int64_t n) {
  if (partner.is_cpu()) {
    check_partner_range(partner, n);
    return;
  }
  if (partner.numel() == 0) return;
  const auto [lo, hi] = value_range(partner);
  TORCH_CHECK(lo >= 0 && hi < n, "partner should hold indices in [0, ", n,
              "), got values from ", lo, " to ", hi);
}

// `parts` on `device`, contiguous. Those already there are used as they are; host ones travel
// together: packed into one pinned buffer (8-byte aligned offsets), copied in one transfer
// enqueued on the current stream (no sync; the caching host allocator keeps the buffer until the
// copy is done), then viewed in place on the device.
std::vector<at::Tensor> on_device(const std::vector<at::Tensor>& parts, const at::Device& device) {
  std::vector<at::Tensor> result(parts.size());
  std::vector<at::Tensor> host;
  std::vector<int64_t> offsets;
  int64_t bytes = 0;
  for (size_t k = 0; k < parts.size(); ++k) {
    if (parts[k].is_cpu()) {
      host.push_back(parts[k].contiguous());
      offsets.push_back(bytes);
      bytes += (host.back().nbytes() + 7) / 8 * 8;
    } else {
      result[k] = parts[k].contiguous();
    }
  }
  if (host.empty()) return result;
  at::Tensor staged = at::empty({std::max<int64_t>(bytes, 8)},
                                at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  for (size_t k = 0; k < host.size(); ++k) {
    if (host[k].nbytes() == 0) continue;  // an empty tensor may have no data pointer
    std::memcpy(staged.data_ptr<uint8_t>() + offsets[k], host[k].data_ptr(), host[k].nbytes());
  }
  at::Tensor moved =
      at::empty(staged.sizes(), staged.options().pinned_memory(false).device(device));
  moved.copy_(staged, /*non_blocking=*/true);
  size_t next = 0;
  for (size_t k = 0; k < parts.size(); ++k) {
    if (result[k].defined()) continue;
    const at::Tensor& h = host[next];
    result[k] = moved.narrow(0, offsets[next], static_cast<int64_t>(h.nbytes()))
                    .view(h.scalar_type())
                    .view(h.sizes());
    ++next;
  }
  return result;
}

at::Tensor& mix_out_cuda(const at::Tensor& images_in, const at::Tensor& partner_in,
                         const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                         std::optional<double> fill, at::Tensor& out) {
  const std::string mode_str(mode_name);
  const MaskMode mode = check_mix_args(images_in, partner_in, params_in, mode_str);
  check_mix_fill(fill);
  // Reached when any argument is on a CUDA device: the images and out must both be.
  TORCH_CHECK(images_in.is_cuda() && out.device() == images_in.device(),
              "images and out should be on one CUDA device, got images on ", images_in.device(),
              " and out on ", out.device());
  c10::cuda::CUDAGuard guard(images_in.device());
  // A channels-last input stays as it is (suggest_memory_format keeps it), anything else is made
  // contiguous.
  const at::Tensor images = images_in.contiguous(images_in.suggest_memory_format());
  const Layout lay = layout_of(images);
  check_mix_out(images, out, lay);
  if (images.numel() == 0) return out;
  if (!fill.has_value()) check_partner(partner_in, lay.n);
  const auto dev = on_device({partner_in, params_in}, images.device());
  const at::Tensor& partner = dev[0];
  const at::Tensor& params = dev[1];
  at::Tensor gy, gx;
  compute_profiles(params, mode, lay, gy, gx);
  const int64_t rows = lay.n * lay.rows();
  const int width = images.scalar_type() == at::kByte ? u8_vector_width(images, out, lay.inner())
                                                      : 1;
  if (width > 1) {
    const auto launch = [&](auto vec) {
      mix_u8_vec_kernel<decltype(vec)::value>
          <<<blocks_for(rows * 32), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
              images.data_ptr<uint8_t>(), partner.data_ptr<int64_t>(), gy.data_ptr<float>(),
              gx.data_ptr<float>(), lay.n, lay.rows(), lay.inner(), lay.h, invert,
              fill.has_value(), saturated_fill(fill.value_or(0.0), images.scalar_type()),
              out.data_ptr<uint8_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (width == 16) {
      launch(std::integral_constant<int, 16>{});
    } else {
      launch(std::integral_constant<int, 4>{});
    }
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND3(
      at::kByte, at::kHalf, at::kBFloat16, images.scalar_type(), "pyrobust_mix_cuda", [&] {
        mix_kernel<scalar_t><<<blocks_for(rows * 32), kThreads, 0,
                               at::cuda::getCurrentCUDAStream()>>>(
            images.data_ptr<scalar_t>(), partner.data_ptr<int64_t>(), gy.data_ptr<float>(),
            gx.data_ptr<float>(), lay.n, lay.rows(), lay.inner(), lay.h, invert,
            fill.has_value(), saturated_fill(fill.value_or(0.0), images.scalar_type()),
            out.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

// pyrobust::mix_pairs_: one warp per row pair, rows i and j = N - 1 - i of one (channel, y). Each
// lane loads its values of both rows, then writes both blends where they were: nothing it writes
// is read by another lane, so the pair is mixed in place with one read and one write of each.
template <typename T>
__global__ void mix_pairs_kernel(T* x, const int64_t* __restrict__ modes,
                                 const bool* __restrict__ invert, const float* __restrict__ gy,
                                 const float* __restrict__ gx, int64_t n, int64_t rows,
                                 int64_t inner, int64_t h) {
  using A = typename Compute<T>::type;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int64_t half = n / 2;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
       row < half * rows; row += warps) {
    const int64_t i = row / rows;
    const int64_t r = row - i * rows;
    const int64_t j = n - 1 - i;
    // A row whose inverted mask is 1 throughout (gy = 0: outside a box) is left as it is, as on
    // the CPU.
    const bool mi = modes[i] >= 0 && !(invert[i] && gy[i * h + r % h] == 0.f);
    const bool mj = modes[j] >= 0 && !(invert[j] && gy[j * h + r % h] == 0.f);
    if (!mi && !mj) continue;
    T* a = x + row * inner;
    T* b = x + (j * rows + r) * inner;
    const A base_i = invert[i] ? A(1) : A(0), base_j = invert[j] ? A(1) : A(0);
    const A gy_i = static_cast<A>(gy[i * h + r % h]) * (invert[i] ? A(-1) : A(1));
    const A gy_j = static_cast<A>(gy[j * h + r % h]) * (invert[j] ? A(-1) : A(1));
    const float* gx_i = gx + i * inner;
    const float* gx_j = gx + j * inner;
    for (int64_t k0 = lane; k0 < inner; k0 += 32 * kUnroll) {
      A av[kUnroll] = {}, bv[kUnroll] = {}, gi[kUnroll] = {}, gj[kUnroll] = {};
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + 32 * u;
        if (k < inner) {
          av[u] = static_cast<A>(a[k]);
          bv[u] = static_cast<A>(b[k]);
          if (mi) gi[u] = static_cast<A>(gx_i[k]);
          if (mj) gj[u] = static_cast<A>(gx_j[k]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + 32 * u;
        if (k < inner) {
          if (mi) a[k] = blend<T, A>(base_i + gy_i * gi[u], av[u], bv[u]);
          if (mj) b[k] = blend<T, A>(base_j + gy_j * gj[u], bv[u], av[u]);
        }
      }
    }
  }
}

void mix_pairs_cuda(const at::Tensor& images, const at::Tensor& params_in,
                    const at::Tensor& modes_in, const at::Tensor& invert_in) {
  const Layout lay = check_mix_pairs_args(images, params_in, modes_in, invert_in);
  TORCH_CHECK(images.is_cuda(), "images should be on a CUDA device, got ", images.device());
  c10::cuda::CUDAGuard guard(images.device());
  if (images.numel() == 0 || lay.n < 2) return;
  const auto dev = on_device({params_in, modes_in, invert_in}, images.device());
  const int64_t* modes = dev[1].data_ptr<int64_t>();
  at::Tensor gy, gx;
  compute_profiles(dev[0], MaskMode::kConstant, lay, gy, gx, modes);
  const int64_t rows = (lay.n / 2) * lay.rows();
  AT_DISPATCH_FLOATING_TYPES_AND3(
      at::kByte, at::kHalf, at::kBFloat16, images.scalar_type(), "pyrobust_mix_pairs_cuda", [&] {
        mix_pairs_kernel<scalar_t><<<blocks_for(rows * 32), kThreads, 0,
                                     at::cuda::getCurrentCUDAStream()>>>(
            images.data_ptr<scalar_t>(), modes, dev[2].data_ptr<bool>(), gy.data_ptr<float>(),
            gx.data_ptr<float>(), lay.n, lay.rows(), lay.inner(), lay.h);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

__global__ void outer_kernel(const float* __restrict__ gy, const float* __restrict__ gx,
                             int64_t n, int64_t h, int64_t w, float base, float sign,
                             float* __restrict__ masks) {
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n * h * w;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = t / (h * w);
    const int64_t y = (t / w) % h;
    const int64_t x = t % w;
    masks[t] = base + sign * gy[i * h + y] * gx[i * w + x];
  }
}

at::Tensor mix_mask_cuda(const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                         int64_t height, int64_t width) {
  const MaskMode mode = check_mask_args(params_in, std::string(mode_name), height, width, false);
  c10::cuda::CUDAGuard guard(params_in.device());
  const at::Tensor params = params_in.contiguous();
  const Layout lay{false, params.size(0), 1, height, width};
  at::Tensor gy, gx;
  compute_profiles(params, mode, lay, gy, gx);
  at::Tensor masks = at::empty({lay.n, height, width}, params.options());
  if (masks.numel() == 0) return masks;
  outer_kernel<<<blocks_for(masks.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      gy.data_ptr<float>(), gx.data_ptr<float>(), lay.n, height, width, invert ? 1.f : 0.f,
      invert ? -1.f : 1.f, masks.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return masks;
}

// mean(G) of one sample, by the whole block (every thread calls it, with the block's own
// arguments): double sums of the profile values, reduced within each warp, then across warps.
// The result is valid in thread 0. mix_lambda and mix_targets share it, so their lam agree.
__device__ double block_mask_mean(MaskMode mode, const float* p, bool invert, int64_t h,
                                  int64_t w) {
  __shared__ double partial[2][kThreads / 32];
  double sy = 0, sx = 0;
  for (int64_t t = threadIdx.x; t < h; t += blockDim.x) sy += mask_profile(mode, p, 1, t);
  for (int64_t t = threadIdx.x; t < w; t += blockDim.x) sx += mask_profile(mode, p, 0, t);
  for (int offset = 16; offset > 0; offset /= 2) {
    sy += __shfl_down_sync(0xffffffffu, sy, offset);
    sx += __shfl_down_sync(0xffffffffu, sx, offset);
  }
  if (threadIdx.x % 32 == 0) {
    partial[0][threadIdx.x / 32] = sy;
    partial[1][threadIdx.x / 32] = sx;
  }
  __syncthreads();
  if (threadIdx.x != 0) return 0.0;
  sy = sx = 0;
  for (int q = 0; q < kThreads / 32; ++q) {
    sy += partial[0][q];
    sx += partial[1][q];
  }
  const double mean = sy * sx / (static_cast<double>(h) * w);
  return invert ? 1.0 - mean : mean;
}

// One block per sample: sample first + blockIdx.x.
__global__ void lambda_kernel(const float* __restrict__ params, MaskMode mode, bool invert,
                              int64_t h, int64_t w, int64_t first, float* __restrict__ lam) {
  const int64_t i = first + blockIdx.x;
  const double mean = block_mask_mean(mode, params + i * kMixParams, invert, h, w);
  if (threadIdx.x == 0) lam[i] = static_cast<float>(mean);
}

// Launches `launch(blocks, first)` for n one-block-per-sample jobs in slices of at most 2^31 - 1
// blocks (the grid's x limit).
template <typename Launch>
void for_each_sample_slice(int64_t n, const Launch& launch) {
  constexpr int64_t kMaxGridX = (int64_t(1) << 31) - 1;
  for (int64_t first = 0; first < n; first += kMaxGridX) {
    launch(static_cast<unsigned>(std::min(kMaxGridX, n - first)), first);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor mix_lambda_cuda(const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                           int64_t height, int64_t width) {
  const MaskMode mode = check_mask_args(params_in, std::string(mode_name), height, width, true);
  c10::cuda::CUDAGuard guard(params_in.device());
  const at::Tensor params = params_in.contiguous();
  const int64_t n = params.size(0);
  at::Tensor lam = at::empty({n}, params.options());
  for_each_sample_slice(n, [&](unsigned blocks, int64_t first) {
    lambda_kernel<<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        params.data_ptr<float>(), mode, invert, height, width, first, lam.data_ptr<float>());
  });
  return lam;
}

// One block per sample: lam (block_mask_mean), then the sample's targets row. The weights are
// rounded to float32 and added in the CPU kernel's order, with intrinsics that are never
// contracted into a fused multiply-add.
__global__ void targets_kernel(const float* __restrict__ params,
                               const int64_t* __restrict__ partner,
                               const int64_t* __restrict__ labels, MaskMode mode, bool invert,
                               int64_t h, int64_t w, int64_t k, float floor, float keep,
                               bool mix_labels, int64_t first, float* __restrict__ targets,
                               float* __restrict__ lam) {
  __shared__ float weights[2];
  const int64_t i = first + blockIdx.x;
  const int64_t j = mix_labels ? partner[i] : i;
  const bool mixed = j != i && h > 0 && w > 0;  // the same for the whole block
  const double mean = mixed ? block_mask_mean(mode, params + i * kMixParams, invert, h, w) : 1.0;
  if (threadIdx.x == 0) {
    const float li = static_cast<float>(mean);
    lam[i] = li;
    weights[0] = __fmul_rn(li, keep);
    weights[1] = __fmul_rn(__fsub_rn(1.f, li), keep);
  }
  __syncthreads();
  const int64_t yi = labels[i], yj = labels[j];
  float* row = targets + i * k;
  for (int64_t c = threadIdx.x; c < k; c += blockDim.x) {
    float v = floor;
    if (c == yi) v = __fadd_rn(v, weights[0]);
    if (mixed && c == yj) v = __fadd_rn(v, weights[1]);
    row[c] = v;
  }
}

std::tuple<at::Tensor, at::Tensor> mix_targets_cuda(
    const at::Tensor& images, const at::Tensor& labels_in, const at::Tensor& partner_in,
    const at::Tensor& params_in, c10::string_view mode_name, bool invert, int64_t num_classes,
    double label_smoothing, bool mix_labels) {
  // Labels on the device cost one sync here, for their range check.
  const MaskMode mode = check_targets_args(images, labels_in, partner_in, params_in,
                                           std::string(mode_name), num_classes, label_smoothing);
  c10::cuda::CUDAGuard guard(images.device());
  const int64_t n = images.size(0);
  const auto opts = images.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous);
  at::Tensor targets = at::empty({n, num_classes}, opts);
  at::Tensor lam = at::empty({n}, opts);
  if (n == 0) return {targets, lam};
  if (mix_labels) check_partner(partner_in, n);
  const auto dev = on_device({labels_in.to(at::kLong), partner_in, params_in}, images.device());
  const TargetWeights tw = target_weights(label_smoothing, num_classes);
  for_each_sample_slice(n, [&](unsigned blocks, int64_t first) {
    targets_kernel<<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dev[2].data_ptr<float>(), dev[1].data_ptr<int64_t>(), dev[0].data_ptr<int64_t>(), mode,
        invert, images.size(2), images.size(3), num_classes, tw.floor, tw.keep, mix_labels,
        first, targets.data_ptr<float>(), lam.data_ptr<float>());
  });
  return {targets, lam};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, CUDA, m) {
  m.impl("mix.out", &mix_out_cuda);
  m.impl("mix_mask", &mix_mask_cuda);
  m.impl("mix_lambda", &mix_lambda_cuda);
  m.impl("mix_targets", &mix_targets_cuda);
  m.impl("mix_pairs_", &mix_pairs_cuda);
}

}  // namespace pyrobust
