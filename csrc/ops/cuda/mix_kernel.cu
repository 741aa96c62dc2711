// CUDA kernels of the pyrobust::mix family.
//
// Two launches: a tiny one computing the 1-D profiles of every sample (N * (H + inner) floats,
// never an (N, C, H, W) mask), then one pass over the images, a warp per row. Only the ATen
// headers the kernels need are included: a .cu including torch/extension.h takes minutes to
// compile per architecture.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

// gy: (N, H); gx: (N, inner), the x-profile repeated per channel for channels-last rows.
__global__ void profiles_kernel(const float* __restrict__ params, MaskMode mode, int64_t n,
                                int64_t h, int64_t w, int64_t reps, float* __restrict__ gy,
                                float* __restrict__ gx) {
  const int64_t per = h + w * reps;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n * per;
       t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = t / per;
    const int64_t k = t % per;
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
// values, consecutive lanes on consecutive addresses. The same arithmetic as the CPU rows.
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
      for (int64_t k = lane; k < inner; k += 32) o[k] = a[k];
      continue;
    }
    const T* b = src + (j * rows + r) * inner;
    const A gyv = static_cast<A>(gy[i * h + r % h]) * sign;
    const float* g_x = gx + i * inner;
    for (int64_t k = lane; k < inner; k += 32) {
      const A g = base + gyv * static_cast<A>(g_x[k]);
      const A av = static_cast<A>(a[k]);
      const A bv = use_fill ? fill_a : static_cast<A>(b[k]);
      o[k] = store<T, A>(g * av + (A(1) - g) * bv);  // exact copies at g = 0 and g = 1
    }
  }
}

int blocks_for(int64_t work) {
  const int64_t sm = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, sm * 32)));
}

void compute_profiles(const at::Tensor& params, MaskMode mode, const Layout& lay, at::Tensor& gy,
                      at::Tensor& gx) {
  const int64_t reps = lay.channels_last ? lay.c : 1;
  gy = at::empty({lay.n, lay.h}, params.options());
  gx = at::empty({lay.n, lay.w * reps}, params.options());
  const int64_t work = lay.n * (lay.h + lay.w * reps);
  if (work == 0) return;
  profiles_kernel<<<blocks_for(work), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      params.data_ptr<float>(), mode, lay.n, lay.h, lay.w, reps, gy.data_ptr<float>(),
      gx.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor& mix_out_cuda(const at::Tensor& images_in, const at::Tensor& partner_in,
                         const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                         std::optional<double> fill, at::Tensor& out) {
  const std::string mode_str(mode_name);
  const MaskMode mode = check_mix_args(images_in, partner_in, params_in, mode_str);
  c10::cuda::CUDAGuard guard(images_in.device());
  // A channels-last input stays as it is (suggest_memory_format keeps it), anything else is made
  // contiguous.
  const at::Tensor images = images_in.contiguous(images_in.suggest_memory_format());
  const Layout lay = layout_of(images);
  check_mix_out(images, out, lay);
  if (images.numel() == 0) return out;
  // An index out of range would read outside the batch. Host parameters (the mixers') are
  // checked on the host and copied with the launch, so a training loop never waits here; a
  // partner already on the device costs one sync for its check.
  if (!fill.has_value()) {
    if (partner_in.is_cpu()) {
      check_partner_range(partner_in, lay.n);
    } else {
      const auto range = at::stack({partner_in.min(), partner_in.max()}).cpu();
      const int64_t lo = range[0].item<int64_t>(), hi = range[1].item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < lay.n, "partner should hold indices in [0, ", lay.n,
                  "), got values from ", lo, " to ", hi);
    }
  }
  const auto on_device = [&](const at::Tensor& t) {
    return t.to(t.options().device(images.device()), /*non_blocking=*/true).contiguous();
  };
  const at::Tensor partner = on_device(partner_in);
  const at::Tensor params = on_device(params_in);
  at::Tensor gy, gx;
  compute_profiles(params, mode, lay, gy, gx);
  const int64_t rows = lay.n * lay.rows();
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

at::Tensor mix_lambda_cuda(const at::Tensor& params_in, c10::string_view mode_name, bool invert,
                           int64_t height, int64_t width) {
  const MaskMode mode = check_mask_args(params_in, std::string(mode_name), height, width, true);
  c10::cuda::CUDAGuard guard(params_in.device());
  const at::Tensor params = params_in.contiguous();
  const Layout lay{false, params.size(0), 1, height, width};
  at::Tensor gy, gx;
  compute_profiles(params, mode, lay, gy, gx);
  // Reductions of N * (H + W) values: ATen's sums are plenty, and exact like the CPU path.
  at::Tensor mean = gy.to(at::kDouble).sum(1).mul(gx.to(at::kDouble).sum(1)).div(
      static_cast<double>(height) * width);
  if (invert) mean = mean.neg().add(1.0);
  return mean.to(at::kFloat);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, CUDA, m) {
  m.impl("mix.out", &mix_out_cuda);
  m.impl("mix_mask", &mix_mask_cuda);
  m.impl("mix_lambda", &mix_lambda_cuda);
}

}  // namespace pyrobust
