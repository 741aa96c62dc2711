// CPU kernels of the probe family: fused softmax / sigmoid, cross-entropy, gradient and line-search
// statistics, one pass over the (N, m, K) logits. Rows are split into fixed blocks whose float64
// partial sums are added in block order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/cpu/simd.h"
#include "ops/probe.h"

namespace pyrobust {
namespace {

constexpr int64_t kMaxBlocks = 256;

int64_t num_blocks(int64_t n) { return std::max<int64_t>(1, std::min<int64_t>(n, kMaxBlocks)); }

// log(1 + exp(z)) without overflow.
template <typename T>
inline T softplus(T z) {
  return std::max(z, T(0)) + std::log1p(std::exp(-std::abs(z)));
}

template <typename T>
inline T sigmoid(T z) {
  return z >= 0 ? T(1) / (T(1) + std::exp(-z)) : std::exp(z) / (T(1) + std::exp(z));
}

// exp(a) for a <= 0: a branch-free Cody-Waite reduction with a degree-6 polynomial (relative
// error about 2e-7, seen through the normalised probabilities too) that GCC vectorises in the
// AVX2 clone (ops/cpu/simd.h); std::exp does not, and the exponentials are most of a fused pass
// (docs/probe-solver.md). Inputs below -87 give exp(-87) (about 1.6e-38) instead of 0, which no
// sum of probabilities can see.
__attribute__((always_inline)) inline float exp_poly(float a) {
  a = std::max(a, -87.0f);
  const float t = a * 1.44269504088896341f;
  const float fi = (t + 12582912.0f) - 12582912.0f;  // round to nearest (no fast-math here)
  const float f = (a - fi * 0.693359375f) + fi * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f;
  p = p * f + 1.0f / 24.0f;
  p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fi) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// e[j] = exp(x[j] - shift) for x[j] <= shift; returns the sum of e.
PYROBUST_CLONES float exp_shifted(const float* __restrict x, float shift, float* __restrict e,
                                  int64_t k) {
  for (int64_t j = 0; j < k; ++j) e[j] = exp_poly(x[j] - shift);
  constexpr int kLanes = 8;  // independent partial sums: no fast-math needed to vectorise
  float acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + kLanes <= k; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += e[j + l];
  float sum = 0;
  for (; j < k; ++j) sum += e[j];
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

double exp_shifted(const double* x, double shift, double* e, int64_t k) {
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) {
    e[j] = std::exp(x[j] - shift);
    sum += e[j];
  }
  return sum;
}

// expm1(x) for |x| <= 1 (kExactStep): its Taylor series to x^10, truncated below 3e-8 of the
// value, as plain arithmetic that GCC vectorises in the AVX2 clone. float64 takes std::expm1.
__attribute__((always_inline)) inline float expm1_small(float x) {
  float p = 1.0f / 3628800.0f;
  p = p * x + 1.0f / 362880.0f;
  p = p * x + 1.0f / 40320.0f;
  p = p * x + 1.0f / 5040.0f;
  p = p * x + 1.0f / 720.0f;
  p = p * x + 1.0f / 120.0f;
  p = p * x + 1.0f / 24.0f;
  p = p * x + 1.0f / 6.0f;
  p = p * x + 0.5f;
  p = p * x + 1.0f;
  return p * x;
}
inline double expm1_small(double x) { return std::expm1(x); }

// sum_j e[j] expm1(-t (d[j] - dy)), each |t (d[j] - dy)| <= kExactStep.
PYROBUST_CLONES float sum_expm1(const float* __restrict e, const float* __restrict d, float dy,
                                float t, int64_t k) {
  constexpr int kLanes = 8;
  float acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + kLanes <= k; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += e[j + l] * expm1_small(-t * (d[j + l] - dy));
  float sum = 0;
  for (; j < k; ++j) sum += e[j] * expm1_small(-t * (d[j] - dy));
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

double sum_expm1(const double* e, const double* d, double dy, double t, int64_t k) {
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) sum += e[j] * std::expm1(-t * (d[j] - dy));
  return sum;
}

// One row's gradient w (p - onehot) and its (loss, curvature) added to stats (kLossGradStats):
// the binomial model at logit z with p = sigmoid(z), and the multinomial one from e = exp(z -
// max) (e may be g itself), 1 / sum e and the row's loss. loss_grad_rows writes every row so;
// line_stats_rows writes the step's rows so.
template <typename T>
inline void sigmoid_grad_row(T z, T p, int64_t y, T w, T* g, double* stats) {
  stats[0] += double(w) * (softplus(z) - T(y) * z);
  stats[1] += double(w) * p * (T(1) - p);
  g[0] = w * (p - T(y));
}
template <typename T>
inline void softmax_grad_row(const T* e, T inv, double loss, int64_t y, T w, T* g, int64_t k,
                             double* stats) {
  T sq = 0;
  for (int64_t j = 0; j < k; ++j) {
    const T p = e[j] * inv;
    sq += p * p;
    g[j] = w * p;
  }
  g[y] -= w;
  stats[0] += double(w) * loss;
  stats[1] += double(w) * (T(1) - sq) / T(k - 1);
}

template <typename T>
void loss_grad_rows(const T* z_all, const int64_t* target, const T* weight, T* g_all,
                    double* partial, int64_t r0, int64_t r1, int64_t m, int64_t k) {
  for (int64_t n = r0; n < r1; ++n) {
    const int64_t y = target[n];
    const T w = weight[n];
    if (!probe_target_ok(y, k)) {
      std::fill(g_all + n * m * k, g_all + (n + 1) * m * k, std::numeric_limits<T>::quiet_NaN());
      for (int64_t c = 0; c < m; ++c) partial[c * kLossGradStats] = NAN;
      continue;
    }
    for (int64_t c = 0; c < m; ++c) {
      const T* z = z_all + (n * m + c) * k;
      T* g = g_all + (n * m + c) * k;
      double* stats = partial + c * kLossGradStats;
      if (k == 1) {
        sigmoid_grad_row(z[0], sigmoid(z[0]), y, w, g, stats);
        continue;
      }
      T mx = z[0];
      for (int64_t j = 1; j < k; ++j) mx = std::max(mx, z[j]);
      const T se = exp_shifted(z, mx, g, k);
      softmax_grad_row(g, T(1) / se, double(mx) + std::log(double(se)) - z[y], y, w, g, k, stats);
    }
  }
}

// The line search's statistics of one block of rows at t = step[c]: the loss, its first two
// derivatives in t, and the change of the loss from t = 0 (kLineStats in ops/probe.h). The change
// is taken as a difference, not as loss(t) - loss(0): with p_t the softmax at z + t d,
//   loss(t) - loss(0) = -log(sum_j p_t,j exp(-t (d_j - d_y))) = -log1p(sum_j p_t,j expm1(...)),
// exact to the precision of the change itself where the two losses would carry float32 round-off
// of the loss, far above the change near an optimum (docs/probe-solver.md, "The decrease test").
// A row whose logits move by more than kExactStep takes the plain difference of its two losses.
//
// With zt_all (then g_all and step_partial too), the same pass also writes the logits at t,
// z + t d, their loss_grad_rows gradient and its (loss, curvature) sums: the step's new state,
// when t is the step the line search takes.
template <typename T>
void line_stats_rows(const T* z_all, const T* d_all, const int64_t* target, const T* weight,
                     const double* step, T* buf, double* partial, int64_t r0, int64_t r1,
                     int64_t m, int64_t k, T* zt_all = nullptr, T* g_all = nullptr,
                     double* step_partial = nullptr) {
  for (int64_t n = r0; n < r1; ++n) {
    const int64_t y = target[n];
    const double w = weight[n];
    if (!probe_target_ok(y, k)) {
      for (int64_t c = 0; c < m; ++c) {
        partial[c * kLineStats] = NAN;
        partial[c * kLineStats + 3] = NAN;
        if (zt_all) step_partial[c * kLossGradStats] = NAN;
      }
      if (zt_all) {
        for (int64_t i = n * m * k; i < (n + 1) * m * k; ++i) {
          zt_all[i] = z_all[i] + T(step[(i / k) % m]) * d_all[i];
          g_all[i] = std::numeric_limits<T>::quiet_NaN();
        }
      }
      continue;
    }
    for (int64_t c = 0; c < m; ++c) {
      const T* z = z_all + (n * m + c) * k;
      const T* d = d_all + (n * m + c) * k;
      const T t = T(step[c]);
      double* out = partial + c * kLineStats;
      double change;
      if (k == 1) {
        const T zt = z[0] + t * d[0];
        const T p = sigmoid(zt);
        out[0] += w * (softplus(zt) - T(y) * zt);
        out[1] += w * (p - T(y)) * d[0];
        out[2] += w * p * (T(1) - p) * d[0] * d[0];
        // loss = softplus(s z), s = 1 - 2 y: the change is softplus(a) - softplus(a - b)
        const T sgn = y ? T(-1) : T(1), a = sgn * zt, b = sgn * t * d[0];
        change = std::abs(b) <= T(kExactStep)
                     ? -std::log1p(double(sigmoid(a)) * double(expm1_small(-b)))
                     : double(softplus(a)) - double(softplus(a - b));
        if (zt_all) {
          zt_all[n * m + c] = zt;
          sigmoid_grad_row(zt, p, y, weight[n], g_all + n * m + c,
                           step_partial + c * kLossGradStats);
        }
      } else {
        for (int64_t j = 0; j < k; ++j) buf[j] = z[j] + t * d[j];
        T mx = buf[0];
        for (int64_t j = 1; j < k; ++j) mx = std::max(mx, buf[j]);
        const T zy = buf[y];
        T* e = buf + k;  // distinct from buf, so the exponential loop needs no alias check
        const T se = exp_shifted(buf, mx, e, k);
        T pd = 0, pdd = 0, spread = 0;
        for (int64_t j = 0; j < k; ++j) {
          pd += e[j] * d[j];
          pdd += e[j] * d[j] * d[j];
          spread = std::max(spread, std::abs(d[j] - d[y]));
        }
        const T inv = T(1) / se;
        pd *= inv;
        pdd *= inv;
        const double loss_t = double(mx) + std::log(double(se)) - zy;
        out[0] += w * loss_t;
        out[1] += w * (pd - d[y]);
        out[2] += w * std::max(T(0), pdd - pd * pd);
        if (zt_all) {  // as loss_grad_rows at z + t d
          std::copy(buf, buf + k, zt_all + (n * m + c) * k);
          softmax_grad_row(e, inv, loss_t, y, weight[n], g_all + (n * m + c) * k, k,
                           step_partial + c * kLossGradStats);
        }
        if (std::abs(t) * spread <= T(kExactStep)) {
          change = -std::log1p(double(sum_expm1(e, d, d[y], t, k)) / double(se));
        } else {
          T mx0 = z[0];
          for (int64_t j = 1; j < k; ++j) mx0 = std::max(mx0, z[j]);
          const T se0 = exp_shifted(z, mx0, buf, k);
          change = loss_t - (double(mx0) + std::log(double(se0)) - z[y]);
        }
      }
      out[3] += w * change;
      out[4] += std::abs(w * change);
    }
  }
}

at::Tensor sum_blocks(const std::vector<double>& partial, int64_t nb, int64_t m, int64_t s) {
  auto out = at::zeros({m, s}, at::dtype(at::kDouble));
  auto* o = out.data_ptr<double>();
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t i = 0; i < m * s; ++i) o[i] += partial[b * m * s + i];
  return out;
}

std::tuple<at::Tensor, at::Tensor> probe_loss_grad_cpu(const at::Tensor& logits,
                                                       const at::Tensor& target,
                                                       const at::Tensor& weight,
                                                       bool check_target) {
  check_probe_logits(logits, target, weight);
  const auto z = logits.contiguous();
  const auto y = target.contiguous();
  const auto w = weight.contiguous();
  const int64_t n = z.size(0), m = z.size(1), k = z.size(2);
  if (check_target) check_probe_targets(y, k);
  auto grad = at::empty_like(z);
  const int64_t nb = num_blocks(n);
  std::vector<double> partial(nb * m * kLossGradStats, 0.0);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "probe_loss_grad_cpu", [&] {
    const auto* zp = z.data_ptr<scalar_t>();
    const auto* wp = w.data_ptr<scalar_t>();
    auto* gp = grad.data_ptr<scalar_t>();
    const auto* yp = y.data_ptr<int64_t>();
    at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        loss_grad_rows<scalar_t>(zp, yp, wp, gp, partial.data() + b * m * kLossGradStats,
                                 b * n / nb, (b + 1) * n / nb, m, k);
      }
    });
  });
  return {grad, sum_blocks(partial, nb, m, kLossGradStats)};
}

// line_stats_rows over every row block of contiguous (z, d, y, w) at the CPU float64 steps
// t: the (m, kLineStats) sums and, where zt_out and g_out are given (defined), the step's
// logits and gradient written there and their (m, kLossGradStats) sums (else an empty tensor).
std::tuple<at::Tensor, at::Tensor> line_stats_blocks(const at::Tensor& z, const at::Tensor& d,
                                                     const at::Tensor& y, const at::Tensor& w,
                                                     const at::Tensor& t, const at::Tensor& zt_out,
                                                     const at::Tensor& g_out) {
  const int64_t n = z.size(0), m = z.size(1), k = z.size(2);
  const int64_t nb = num_blocks(n);
  const bool step_state = zt_out.defined();
  std::vector<double> partial(nb * m * kLineStats, 0.0);
  std::vector<double> step_partial(step_state ? nb * m * kLossGradStats : 0, 0.0);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "probe_line_stats_cpu", [&] {
    const auto* zp = z.data_ptr<scalar_t>();
    const auto* dp = d.data_ptr<scalar_t>();
    const auto* wp = w.data_ptr<scalar_t>();
    const auto* yp = y.data_ptr<int64_t>();
    const auto* tp = t.data_ptr<double>();
    auto* zo = step_state ? zt_out.data_ptr<scalar_t>() : nullptr;
    auto* go = step_state ? g_out.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> buf(2 * k);
      for (int64_t b = b0; b < b1; ++b) {
        line_stats_rows<scalar_t>(
            zp, dp, yp, wp, tp, buf.data(), partial.data() + b * m * kLineStats, b * n / nb,
            (b + 1) * n / nb, m, k, zo, go,
            step_state ? step_partial.data() + b * m * kLossGradStats : nullptr);
      }
    });
  });
  return {sum_blocks(partial, nb, m, kLineStats),
          step_state ? sum_blocks(step_partial, nb, m, kLossGradStats) : at::Tensor()};
}

at::Tensor probe_line_stats_cpu(const at::Tensor& logits, const at::Tensor& direction,
                                const at::Tensor& target, const at::Tensor& weight,
                                const at::Tensor& step, bool check_target) {
  check_probe_line_args(logits, direction, target, weight, step);
  const auto y = target.contiguous();
  if (check_target) check_probe_targets(y, logits.size(2));
  return std::get<0>(line_stats_blocks(logits.contiguous(), direction.contiguous(), y,
                                       weight.contiguous(), step.to(at::kCPU).contiguous(),
                                       at::Tensor(), at::Tensor()));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> probe_line_stats_step_cpu(
    const at::Tensor& logits, const at::Tensor& direction, const at::Tensor& target,
    const at::Tensor& weight, const at::Tensor& step, const at::Tensor& logits_out,
    const at::Tensor& grad_out) {
  check_probe_line_args(logits, direction, target, weight, step);
  TORCH_CHECK(logits_out.is_contiguous() && grad_out.is_contiguous() &&
                  logits_out.sizes() == logits.sizes() && grad_out.sizes() == logits.sizes() &&
                  logits_out.scalar_type() == logits.scalar_type() &&
                  grad_out.scalar_type() == logits.scalar_type(),
              "probe_line_stats_step_cpu: outputs should be contiguous and shaped as the logits");
  return line_stats_blocks(logits.contiguous(), direction.contiguous(), target.contiguous(),
                           weight.contiguous(), step.to(at::kCPU, at::kDouble).contiguous(),
                           logits_out, grad_out);
}

TORCH_LIBRARY_IMPL(pyrobust, CPU, m) {
  m.impl("probe_loss_grad", &probe_loss_grad_cpu);
  m.impl("probe_line_stats", &probe_line_stats_cpu);
}

}  // namespace pyrobust
