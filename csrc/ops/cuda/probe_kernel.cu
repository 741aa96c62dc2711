// CUDA kernels of the probe family: fused softmax / sigmoid, cross-entropy, gradient and
// line-search statistics. One warp per (sample, C) row; the warps of a block share one C, reduce
// their float64 sums in shared memory and add them to the output with one atomic per block.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/probe.h"

namespace pyrobust {
namespace {

constexpr int kWarps = 8;

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ inline T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <typename T>
__device__ inline T softplus(T z) {
  return max(z, T(0)) + log1p(exp(-abs(z)));
}

template <typename T>
__device__ inline T sigmoid(T z) {
  return T(1) / (T(1) + exp(-z));
}

template <int S>
__device__ inline void block_add(double (&vals)[S], double* out) {
  __shared__ double sh[kWarps][S];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0)
    for (int j = 0; j < S; ++j) sh[warp][j] = vals[j];
  __syncthreads();
  if (threadIdx.x < S) {
    double acc = 0;
    for (int i = 0; i < kWarps; ++i) acc += sh[i][threadIdx.x];
    atomicAdd(out + threadIdx.x, acc);
  }
}

template <typename T>
__global__ void loss_grad_kernel(const T* __restrict__ z_all, const int64_t* __restrict__ target,
                                 const T* __restrict__ weight, T* __restrict__ g_all,
                                 double* __restrict__ stats, int64_t n, int64_t m, int64_t k) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t c = blockIdx.y;
  double vals[kLossGradStats] = {0.0, 0.0};
  if (row < n) {
    const T* z = z_all + (row * m + c) * k;
    T* g = g_all + (row * m + c) * k;
    const int64_t y = target[row];
    const T w = weight[row];
    if (k == 1) {
      if (lane == 0) {
        const T p = sigmoid(z[0]);
        vals[0] = double(w) * (softplus(z[0]) - T(y) * z[0]);
        vals[1] = double(w) * p * (T(1) - p);
        g[0] = w * (p - T(y));
      }
    } else {
      T mx = -INFINITY;
      for (int64_t j = lane; j < k; j += 32) mx = max(mx, z[j]);
      mx = warp_max(mx);
      T se = 0;
      for (int64_t j = lane; j < k; j += 32) se += exp(z[j] - mx);
      se = warp_sum(se);
      const T lse = mx + log(se);
      T sq = 0;
      for (int64_t j = lane; j < k; j += 32) {
        const T p = exp(z[j] - lse);
        sq += p * p;
        g[j] = w * (p - T(j == y));
      }
      sq = warp_sum(sq);
      if (lane == 0) {
        vals[0] = double(w) * double(lse - z[y]);
        vals[1] = double(w) * double(T(1) - sq) / double(k - 1);
      }
    }
  }
  block_add<kLossGradStats>(vals, stats + c * kLossGradStats);
}

template <typename T>
__global__ void line_stats_kernel(const T* __restrict__ z_all, const T* __restrict__ d_all,
                                  const int64_t* __restrict__ target,
                                  const T* __restrict__ weight, const double* __restrict__ step,
                                  double* __restrict__ stats, int64_t n, int64_t m, int64_t k) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t c = blockIdx.y;
  double vals[kLineStats] = {0.0, 0.0, 0.0};
  if (row < n) {
    const T* z = z_all + (row * m + c) * k;
    const T* d = d_all + (row * m + c) * k;
    const int64_t y = target[row];
    const double w = weight[row];
    const T t = T(step[c]);
    if (k == 1) {
      if (lane == 0) {
        const T zt = z[0] + t * d[0];
        const T p = sigmoid(zt);
        vals[0] = w * (softplus(zt) - T(y) * zt);
        vals[1] = w * (p - T(y)) * d[0];
        vals[2] = w * p * (T(1) - p) * d[0] * d[0];
      }
    } else {
      T mx = -INFINITY;
      for (int64_t j = lane; j < k; j += 32) mx = max(mx, z[j] + t * d[j]);
      mx = warp_max(mx);
      T se = 0, pd = 0, pdd = 0;
      for (int64_t j = lane; j < k; j += 32) {
        const T e = exp(z[j] + t * d[j] - mx);
        se += e;
        pd += e * d[j];
        pdd += e * d[j] * d[j];
      }
      se = warp_sum(se);
      pd = warp_sum(pd) / se;
      pdd = warp_sum(pdd) / se;
      if (lane == 0) {
        vals[0] = w * (double(mx) + log(double(se)) - double(z[y] + t * d[y]));
        vals[1] = w * double(pd - d[y]);
        vals[2] = w * double(max(T(0), pdd - pd * pd));
      }
    }
  }
  block_add<kLineStats>(vals, stats + c * kLineStats);
}

dim3 grid_for(int64_t n, int64_t m) {
  TORCH_CHECK(m <= 65535, "at most 65535 values of C per call, got ", m);
  return dim3(static_cast<unsigned>((n + kWarps - 1) / kWarps), static_cast<unsigned>(m));
}

std::tuple<at::Tensor, at::Tensor> probe_loss_grad_cuda(const at::Tensor& logits,
                                                        const at::Tensor& target,
                                                        const at::Tensor& weight) {
  check_probe_logits(logits, target, weight);
  c10::cuda::CUDAGuard guard(logits.device());
  const auto z = logits.contiguous();
  const auto y = target.contiguous();
  const auto w = weight.contiguous();
  const int64_t n = z.size(0), m = z.size(1), k = z.size(2);
  auto grad = at::empty_like(z);
  auto stats = at::zeros({m, kLossGradStats}, z.options().dtype(at::kDouble));
  if (n == 0 || m == 0) return {grad, stats};
  auto stream = at::cuda::getCurrentCUDAStream();
  if (z.scalar_type() == at::kFloat) {
    loss_grad_kernel<float><<<grid_for(n, m), kWarps * 32, 0, stream>>>(
        z.data_ptr<float>(), y.data_ptr<int64_t>(), w.data_ptr<float>(), grad.data_ptr<float>(),
        stats.data_ptr<double>(), n, m, k);
  } else {
    loss_grad_kernel<double><<<grid_for(n, m), kWarps * 32, 0, stream>>>(
        z.data_ptr<double>(), y.data_ptr<int64_t>(), w.data_ptr<double>(),
        grad.data_ptr<double>(), stats.data_ptr<double>(), n, m, k);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad, stats};
}

at::Tensor probe_line_stats_cuda(const at::Tensor& logits, const at::Tensor& direction,
                                 const at::Tensor& target, const at::Tensor& weight,
                                 const at::Tensor& step) {
  check_probe_line_args(logits, direction, target, weight, step);
  c10::cuda::CUDAGuard guard(logits.device());
  const auto z = logits.contiguous();
  const auto d = direction.contiguous();
  const auto y = target.contiguous();
  const auto w = weight.contiguous();
  const auto t = step.to(logits.device()).contiguous();
  const int64_t n = z.size(0), m = z.size(1), k = z.size(2);
  auto stats = at::zeros({m, kLineStats}, z.options().dtype(at::kDouble));
  if (n == 0 || m == 0) return stats;
  auto stream = at::cuda::getCurrentCUDAStream();
  if (z.scalar_type() == at::kFloat) {
    line_stats_kernel<float><<<grid_for(n, m), kWarps * 32, 0, stream>>>(
        z.data_ptr<float>(), d.data_ptr<float>(), y.data_ptr<int64_t>(), w.data_ptr<float>(),
        t.data_ptr<double>(), stats.data_ptr<double>(), n, m, k);
  } else {
    line_stats_kernel<double><<<grid_for(n, m), kWarps * 32, 0, stream>>>(
        z.data_ptr<double>(), d.data_ptr<double>(), y.data_ptr<int64_t>(), w.data_ptr<double>(),
        t.data_ptr<double>(), stats.data_ptr<double>(), n, m, k);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return stats;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, CUDA, m) {
  m.impl("probe_loss_grad", &probe_loss_grad_cuda);
  m.impl("probe_line_stats", &probe_line_stats_cuda);
}

}  // namespace pyrobust
