// CUDA kernels of the probe family: fused softmax / sigmoid, cross-entropy, gradient and
// line-search statistics. One warp per (sample, C) row; the warps of a block share one C, reduce
// their float64 sums in shared memory and add them to the output with one atomic per block.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/probe.h"

#include <algorithm>

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

// p = exp(z - max) / sum exp(z - max), as the CPU kernel computes it: p taken as exp(z - lse)
// with lse = max + log(sum) rounded to float would carry lse's rounding (~|lse| 2^-24, 1e-6 at
// |lse| ~ 20) into every p, and rows of the gradient would no longer sum to 0. The loss is
// lse - z[y] in float64.
template <typename T>
__global__ void loss_grad_kernel(const T* __restrict__ z_all, const int64_t* __restrict__ target,
                                 const T* __restrict__ weight, T* __restrict__ g_all,
                                 double* __restrict__ stats, int64_t n, int64_t m, int64_t k,
                                 int64_t c0) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t c = c0 + blockIdx.y;
  double vals[kLossGradStats] = {0.0, 0.0};
  if (row < n) {
    const T* z = z_all + (row * m + c) * k;
    T* g = g_all + (row * m + c) * k;
    const int64_t y = target[row];
    const T w = weight[row];
    if (!probe_target_ok(y, k)) {
      for (int64_t j = lane; j < k; j += 32) g[j] = T(NAN);
      if (lane == 0) vals[0] = NAN;
    } else if (k == 1) {
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
      const T inv = T(1) / se;
      T sq = 0;
      for (int64_t j = lane; j < k; j += 32) {
        const T p = exp(z[j] - mx) * inv;
        sq += p * p;
        g[j] = w * p - (j == y ? w : T(0));
      }
      sq = warp_sum(sq);
      if (lane == 0) {
        vals[0] = double(w) * (double(mx) + log(double(se)) - double(z[y]));
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
                                  double* __restrict__ stats, int64_t n, int64_t m, int64_t k,
                                  int64_t c0) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t c = c0 + blockIdx.y;
  double vals[kLineStats] = {0.0, 0.0, 0.0, 0.0, 0.0};
  if (row < n) {
    const T* z = z_all + (row * m + c) * k;
    const T* d = d_all + (row * m + c) * k;
    const int64_t y = target[row];
    const double w = weight[row];
    const T t = T(step[c]);
    if (!probe_target_ok(y, k)) {
      if (lane == 0) vals[0] = vals[3] = NAN;
    } else if (k == 1) {
      if (lane == 0) {
        const T zt = z[0] + t * d[0];
        const T p = sigmoid(zt);
        vals[0] = w * (softplus(zt) - T(y) * zt);
        vals[1] = w * (p - T(y)) * d[0];
        vals[2] = w * p * (T(1) - p) * d[0] * d[0];
        // the change from t = 0 as a difference, as the CPU kernel takes it
        const T sgn = y ? T(-1) : T(1), a = sgn * zt, b = sgn * t * d[0];
        const double change = abs(b) <= T(kExactStep)
                                  ? -log1p(double(sigmoid(a)) * double(expm1(-b)))
                                  : double(softplus(a)) - double(softplus(a - b));
        vals[3] = w * change;
        vals[4] = abs(w * change);
      }
    } else {
      const T dy = d[y];
      T mx = -INFINITY, spread = 0;
      for (int64_t j = lane; j < k; j += 32) {
        mx = max(mx, z[j] + t * d[j]);
        spread = max(spread, abs(d[j] - dy));
      }
      mx = warp_max(mx);
      const bool exact = abs(t) * warp_max(spread) <= T(kExactStep);  // the same in every lane
      T se = 0, pd = 0, pdd = 0, sx = 0;
      for (int64_t j = lane; j < k; j += 32) {
        const T e = exp(z[j] + t * d[j] - mx);
        se += e;
        pd += e * d[j];
        pdd += e * d[j] * d[j];
        if (exact) sx += e * expm1(-t * (d[j] - dy));
      }
      se = warp_sum(se);
      pd = warp_sum(pd) / se;
      pdd = warp_sum(pdd) / se;
      const double loss_t = double(mx) + log(double(se)) - double(z[y] + t * dy);
      double change;
      if (exact) {
        change = -log1p(double(warp_sum(sx)) / double(se));
      } else {
        T mx0 = -INFINITY, se0 = 0;
        for (int64_t j = lane; j < k; j += 32) mx0 = max(mx0, z[j]);
        mx0 = warp_max(mx0);
        for (int64_t j = lane; j < k; j += 32) se0 += exp(z[j] - mx0);
        change = loss_t - (double(mx0) + log(double(warp_sum(se0))) - double(z[y]));
      }
      if (lane == 0) {
        vals[0] = w * loss_t;
        vals[1] = w * double(pd - dy);
        vals[2] = w * double(max(T(0), pdd - pd * pd));
        vals[3] = w * change;
        vals[4] = abs(w * change);
      }
    }
  }
  block_add<kLineStats>(vals, stats + c * kLineStats);
}

// Launches `launch(grid, c0)` over the m values of C in slices of at most 65,535 (the grid's y
// limit), each slice a grid of (row blocks, slice length).
template <typename Launch>
void for_each_c_slice(int64_t n, int64_t m, const Launch& launch) {
  constexpr int64_t kMaxGridY = 65535;
  const auto row_blocks = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  for (int64_t c0 = 0; c0 < m; c0 += kMaxGridY) {
    launch(dim3(row_blocks, static_cast<unsigned>(std::min(kMaxGridY, m - c0))), c0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The CUDA kernels are reached when any tensor argument is on a CUDA device; the logits must be
// (a host logits tensor with a CUDA step would otherwise meet the device guard).
void check_logits_on_cuda(const at::Tensor& logits) {
  TORCH_CHECK(logits.is_cuda(), "logits should be on the CUDA device of the other arguments, got ",
              logits.device());
}

std::tuple<at::Tensor, at::Tensor> probe_loss_grad_cuda(const at::Tensor& logits,
                                                        const at::Tensor& target,
                                                        const at::Tensor& weight,
                                                        bool check_target) {
  check_probe_logits(logits, target, weight);
  check_logits_on_cuda(logits);
  c10::cuda::CUDAGuard guard(logits.device());
  const auto z = logits.contiguous();
  const auto y = target.contiguous();
  const auto w = weight.contiguous();
  const int64_t n = z.size(0), m = z.size(1), k = z.size(2);
  if (check_target) check_probe_targets(y, k);
  auto grad = at::empty_like(z);
  auto stats = at::zeros({m, kLossGradStats}, z.options().dtype(at::kDouble));
  if (n == 0 || m == 0) return {grad, stats};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "probe_loss_grad_cuda", [&] {
    for_each_c_slice(n, m, [&](dim3 grid, int64_t c0) {
      loss_grad_kernel<scalar_t><<<grid, kWarps * 32, 0, stream>>>(
          z.data_ptr<scalar_t>(), y.data_ptr<int64_t>(), w.data_ptr<scalar_t>(),
          grad.data_ptr<scalar_t>(), stats.data_ptr<double>(), n, m, k, c0);
    });
  });
  return {grad, stats};
}

at::Tensor probe_line_stats_cuda(const at::Tensor& logits, const at::Tensor& direction,
                                 const at::Tensor& target, const at::Tensor& weight,
                                 const at::Tensor& step, bool check_target) {
  check_probe_line_args(logits, direction, target, weight, step);
  check_logits_on_cuda(logits);
  c10::cuda::CUDAGuard guard(logits.device());
  const auto z = logits.contiguous();
  const auto d = direction.contiguous();
  const auto y = target.contiguous();
  const auto w = weight.contiguous();
  const auto t = step.to(logits.device()).contiguous();
  const int64_t n = z.size(0), m = z.size(1), k = z.size(2);
  if (check_target) check_probe_targets(y, k);
  auto stats = at::zeros({m, kLineStats}, z.options().dtype(at::kDouble));
  if (n == 0 || m == 0) return stats;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "probe_line_stats_cuda", [&] {
    for_each_c_slice(n, m, [&](dim3 grid, int64_t c0) {
      line_stats_kernel<scalar_t><<<grid, kWarps * 32, 0, stream>>>(
          z.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(), y.data_ptr<int64_t>(),
          w.data_ptr<scalar_t>(), t.data_ptr<double>(), stats.data_ptr<double>(), n, m, k, c0);
    });
  });
  return stats;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, CUDA, m) {
  m.impl("probe_loss_grad", &probe_loss_grad_cuda);
  m.impl("probe_line_stats", &probe_line_stats_cuda);
}

}  // namespace pyrobust
