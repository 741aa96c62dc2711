// pyrobust::probe_solve: the probe solver loop, L2-regularised logistic regression
// (scikit-learn's objective) for m values of C at once, on any device. Device-generic
// (CompositeExplicitAutograd): the products go through ATen (MKL / cuBLAS) and the fused kernels
// (probe_loss_grad, probe_line_stats) through the dispatcher. The design and the measurements
// behind it are in docs/probe-solver.md.
//
// Model on internal features u = (x - center) / scale (center makes the intercept decouple from
// the coefficients in the Hessian bound below; it is a reparametrisation, the intercept being
// unpenalised):  logits = u W + b,  objective = sum_n w_n loss_n / sum w + lambda / 2 |W|^2.
// X is never modified or copied whole: it is read in chunks of `chunk_rows` rows, each converted
// to the compute dtype / device on the fly (a memory map or a host tensor with a CUDA solve), or,
// with products="split", kept in its float16 / bfloat16 storage (see SplitOperand below).
//
// Method: L-BFGS whose initial inverse Hessian is (a * S + lambda I)^-1, S = eigvecs
// diag(eigvals) eigvecs^T the covariance of u and a the current mean curvature of the loss (a
// Boehning-type bound made tighter with the probabilities at hand), scaled each step by the usual
// s'y / y'Hy. The recursion runs in the eigenbasis of S, where that preconditioner is diagonal:
// each iteration costs one pass X @ [direction], one X^T @ G and two products with eigvecs (the
// direction out of the eigenbasis, the gradient into it); the line search is a 1-D Newton on the
// cached logits of the direction, costing no product with X.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/cpu/simd.h"
#include "ops/probe.h"

namespace pyrobust {
namespace {

struct Pair {  // a (coefficients, intercept) pair: (D, m, K) and (m, K)
  at::Tensor W, b;
};

// A pair packed as one (D + 1, m, K) tensor, the intercept its last row: the two-loop recursion
// then costs one op per update and per inner product instead of one per part and a sum.
at::Tensor pack(const Pair& p) { return at::cat({p.W, p.b.unsqueeze(0)}, 0); }
Pair unpack(const at::Tensor& packed) {  // views
  const int64_t d = packed.size(0) - 1;
  return Pair{packed.narrow(0, 0, d), packed.select(0, d)};
}

// (m,) per-C inner products of two pairs.
at::Tensor dot(const Pair& a, const Pair& b) {
  return (a.W * b.W).sum(at::IntArrayRef{0, 2}) + (a.b * b.b).sum(1);
}
// The same for packed pairs (contiguous). Not at::dot: MKL's dot opens an OpenMP region for
// vectors this short, and waking the team cost more than the product.
at::Tensor packed_dot(const at::Tensor& a, const at::Tensor& b) {
  if (a.size(1) == 1) return (a * b).sum().view({1});
  return (a * b).sum(at::IntArrayRef{0, 2});
}

struct History {  // one L-BFGS pair, in the eigenbasis of S (Problem::to_eig)
  at::Tensor s, y;  // packed (D + 1, m, K)
  at::Tensor rho;   // (m,) compute dtype, 1 / s'y; 0 disables the pair for that C
};

// 1 / s'y where s'y > 0, else 0 (the pair is skipped for that C).
at::Tensor inverse_curvature(const at::Tensor& sy) {
  return at::where(sy > 0, sy.reciprocal(), at::zeros_like(sy));
}

// products="split": the float32 operand B of a product with half-precision X is written as
//   B = (B_0 + B_1 2^-b + B_2 2^-2b) / s,
// parts in X's dtype (b its significand bits: 11 for float16, 8 for bfloat16; two float16 parts,
// three bfloat16 parts), s a power of two putting max |B| s in [2^14, 2^15) (float16 reaches
// 65504). Each part takes the rounding error of the previous one, so the parts carry about 23
// (float16) or 24 (bfloat16) significand bits, and X @ B is their products with X summed in
// float32: a float32 product to round-off, run as 2-3 tensor-core GEMMs with float32
// accumulation and output (at::mm with out_dtype) instead of one float32 GEMM over X converted
// (docs/probe-solver.md). On a CPU the part products run emulated (converted back to float32),
// so the split is tested where no GPU is.
struct SplitOperand {
  std::vector<at::Tensor> parts;  // empty: B == 0
  double inv_scale = 1.0;         // 1 / s
  int bits = 0;
};

// `bound`: a known upper bound on max |B|, saving a pass over B and a host sync (< 0: measure
// it). A loose bound costs precision only to entries below 2^-28 of it, where float16 parts
// become subnormal.
SplitOperand split_operand(const at::Tensor& B, at::ScalarType low, double bound = -1) {
  SplitOperand out;
  out.bits = low == at::kHalf ? 11 : 8;
  const int n_parts = low == at::kHalf ? 2 : 3;
  const double amax =
      bound >= 0 ? bound : at::linalg_vector_norm(B, INFINITY).item<double>();  // no |B| copy
  if (amax == 0) return out;
  // NaN / inf: scale 1, and the product carries them like a float32 one would.
  const int e = std::isfinite(amax) ? std::clamp(14 - std::ilogb(amax), -120, 120) : 0;
  out.inv_scale = std::ldexp(1.0, -e);
  auto r = B.mul(std::ldexp(1.0, e));  // exact: a power of two
  for (int p = 0; p < n_parts; ++p) {
    out.parts.push_back(r.to(low));
    if (p + 1 < n_parts) r.sub_(out.parts.back()).mul_(std::ldexp(1.0, out.bits));
  }
  return out;
}

// A @ part with float32 accumulation and output.
at::Tensor mm_float_out(const at::Tensor& A, const at::Tensor& part) {
  if (A.is_cuda()) return at::mm(A, part, at::kFloat);
  return at::mm(A.to(at::kFloat), part.to(at::kFloat));  // emulated (CPU tests)
}

// sum_p 2^(-p b) A @ B_p = s A @ B (float32); the caller multiplies by inv_scale.
at::Tensor split_mm(const at::Tensor& A, const SplitOperand& B) {
  auto acc = mm_float_out(A, B.parts[0]);
  for (size_t p = 1; p < B.parts.size(); ++p)
    acc.add_(mm_float_out(A, B.parts[p]), std::ldexp(1.0, -B.bits * static_cast<int>(p)));
  return acc;
}

// Whether A @ B is better taken as (B^T A^T)^T: on the CPU, for B of 2 to 15 columns (K of 2 to 15
// classes, or few classes times few C), MKL's GEMM runs 3-9 times slower than on the transposed
// problem, whose output has that many rows instead (docs/probe-solver.md, "Skinny products").
// B is on the compute device (A may be a host chunk of X on its way there).
bool transpose_skinny(const at::Tensor& B) {
  return B.is_cpu() && B.size(1) >= 2 && B.size(1) < 16;
}

// A @ B; where transpose_skinny, a transposed view of the product B^T A^T.
at::Tensor mm_skinny(const at::Tensor& A, const at::Tensor& B) {
  if (!transpose_skinny(B)) return at::mm(A, B);
  return at::mm(B.t(), A.t()).t();
}

// In place, t = the sum (or max) of t over the ranks of a torch.distributed group, by name.
// Called through the dispatcher (_c10d_functional::all_reduce_ then wait_tensor), so the core
// links no c10d symbol and still builds and loads against a torch without distributed support,
// where only a solve given a group fails. Any backend the group has (gloo, nccl) for t's device.
void all_reduce(const at::Tensor& t, const std::string& group, const char* op) {
  static const auto ops = [] {
    auto& d = c10::Dispatcher::singleton();
    return std::make_pair(d.findSchema({"_c10d_functional::all_reduce_", ""}),
                          d.findSchema({"_c10d_functional::wait_tensor", ""}));
  }();
  TORCH_CHECK(ops.first.has_value() && ops.second.has_value(),
              "probe_solve: group_name needs torch.distributed, which this torch build lacks");
  TORCH_CHECK(t.is_contiguous(), "all_reduce needs a contiguous tensor");
  torch::jit::Stack stack{t, std::string(op), group};
  ops.first->callBoxed(&stack);
  stack = {t};
  ops.second->callBoxed(&stack);
}

// Accept a step once |phi'(t)| <= 0.9 |phi'(0)|: the strong Wolfe curvature condition usual for
// L-BFGS, whose step is accepted at t = 1 most of the time; a near-exact search costs more
// iterations (docs/probe-solver.md, "The loose line search").
constexpr double kCurvatureC2 = 0.9;
// ... and only where phi does not climb: phi(t) <= phi(0) + c1 t phi'(0) + kLossNoise eps s(t),
// where the change phi(t) - phi(0) is the fused pass's exact difference (probe_line_stats) and
// s(t) the sum of its rows' magnitudes, the scale of its round-off (eps of the compute dtype).
// For a quadratic phi the curvature condition implies the decrease; the test binds only where
// the loss is flat to round-off, where a step chosen on noisy derivatives can climb far (seen with
// class weights 1e7 apart). A C whose search finds no such step takes none and is marked stalled.
constexpr double kArmijoC1 = 1e-4;
constexpr double kLossNoise = 8.0;
constexpr int kLineSearchSteps = 20;
// The logits are updated incrementally (Z += t Zd) and recomputed from X this often, bounding
// their drift.
constexpr int64_t kRefreshLogits = 100;

// The data and options of one solve, checked, and moved once to the compute device and dtype
// (the dtype and device of coef). Its methods are the passes over X and the preconditioner.
struct Problem {
  const at::Tensor& X;  // (N, D), any float dtype and device, read in chunks
  int64_t n, d, m, k, chunk;
  at::ScalarType dt;
  at::Device dev;
  at::TensorOptions opts;
  bool split;                // products="split"
  std::vector<double> lam;   // (m,) the L2 strengths, on the host
  at::Tensor lam_t;          // (1, m, 1) the same, compute dtype
  at::Tensor y, w;           // (N,) int64 targets, (N,) weights
  double wsum;               // sum of the weights
  double wmax;               // max |w| (split only): a bound on |G| = |w| |p - onehot|
  at::Tensor inv_scale, ctr;  // (D, 1), (1, D)
  at::Tensor Q, s;            // eigvecs (D, D), eigvals clamped at 0 (D, 1, 1)
  bool in_eigenbasis;         // eigvecs empty: X is already (x - center) / scale @ eigvecs
  // The torch.distributed group whose ranks hold the other rows of X (none: X is every row).
  // Every sum over rows below is all-reduced over it; everything else is (D, m, K)-sized and
  // identical on every rank, so every rank takes the same steps.
  std::optional<std::string> group;

  Problem(const at::Tensor& X, const at::Tensor& target, const at::Tensor& weight,
          const at::Tensor& lambdas, const at::Tensor& coef, const at::Tensor& intercept,
          const at::Tensor& center, const at::Tensor& scale, const at::Tensor& eigvecs,
          const at::Tensor& eigvals, double tol, int64_t max_iter, int64_t history,
          int64_t chunk_rows, std::string_view products,
          const std::optional<std::string_view>& group_name);

  at::Tensor on_device(const at::Tensor& t) const { return t.to(dev, dt).contiguous(); }
  // Sums over this rank's rows -> sums over every row (in place; nothing without a group).
  void sum_ranks(const at::Tensor& t) const {
    if (group) all_reduce(t, *group, "sum");
  }
  at::Tensor x_chunk(int64_t r0, int64_t len) const {
    return split ? X.narrow(0, r0, len).to(dev) : X.narrow(0, r0, len).to(dev, dt);
  }
  // logits (N, m*K) of the internal model (W, b), folded onto raw features.
  at::Tensor forward(const Pair& p) const;
  // Unnormalised data gradient (u^T G, 1^T G) from per-sample logit gradients G (N, m*K).
  Pair backward(const at::Tensor& G) const;
  // The objective's gradient at p from G: the data term over sum w, plus the penalty's.
  Pair full_grad(const at::Tensor& G, const Pair& p) const;
  // A pair into the eigenbasis of S (coefficients Q^T W; the intercept as it is) and back out
  // (nothing to do where X is given in that basis).
  // Inner products are the same in either basis. Contiguous: the recursion's reductions over a
  // transposed view ran slower and summed in another order.
  Pair to_eig(const Pair& p) const {
    if (in_eigenbasis) return p;
    return Pair{mm_skinny(Q.t(), p.W.reshape({d, m * k})).contiguous().view({d, m, k}), p.b};
  }
  Pair from_eig(const Pair& p) const {
    if (in_eigenbasis) return p;
    return Pair{mm_skinny(Q, p.W.reshape({d, m * k})).contiguous().view({d, m, k}), p.b};
  }
  // The preconditioner on a pair in the eigenbasis: (a S + lambda)^-1 is diagonal there, 1 / a
  // for the intercept.
  Pair precondition(const Pair& g, const at::Tensor& a) const {
    return Pair{g.W / (a.view({1, m, 1}) * s + lam_t), g.b / a.view({m, 1})};
  }
  // The mean curvature a of the preconditioner, from the fused pass's statistics.
  at::Tensor curvature(const at::Tensor& stats) const {
    return (stats.select(1, 1) / wsum).clamp_min(1e-12).to(dev, dt);
  }
  // Newton-decrement estimate g' M g / 2 (M the preconditioner, about the inverse Hessian): the
  // objective gap. The max-abs gradient alone is not enough on a path: at weak regularisation
  // the warm start's gradient (lambda_new - lambda_old) W is tiny while the optimum is far along
  // directions the data barely curves; g' M g sees that distance. g in the eigenbasis.
  at::Tensor gap(const Pair& g, const at::Tensor& a) const {
    return (0.5 * dot(g, precondition(g, a))).to(at::kCPU, at::kDouble);
  }
};

Problem::Problem(const at::Tensor& X_, const at::Tensor& target, const at::Tensor& weight,
                 const at::Tensor& lambdas, const at::Tensor& coef, const at::Tensor& intercept,
                 const at::Tensor& center, const at::Tensor& scale, const at::Tensor& eigvecs,
                 const at::Tensor& eigvals, double tol, int64_t max_iter, int64_t history,
                 int64_t chunk_rows, std::string_view products,
                 const std::optional<std::string_view>& group_name)
    : X(X_), dt(coef.scalar_type()), dev(coef.device()) {
  if (group_name.has_value()) group = std::string(*group_name);
  TORCH_CHECK(X.dim() == 2, "X should be a 2-D (N, D) tensor, got ", X.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(X.scalar_type()), "X should be a floating tensor, got ",
              X.scalar_type());
  TORCH_CHECK(coef.dim() == 3, "coef should be a 3-D (m, D, K) tensor, got ", coef.dim(), "-D");
  n = X.size(0), d = X.size(1), m = coef.size(0), k = coef.size(2);
  TORCH_CHECK(n > 0, "X should have at least one row");
  TORCH_CHECK(coef.size(1) == d, "coef should have D = ", d, " rows per C, got ", coef.size(1));
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "coef should be float32 or float64, got ", dt);
  TORCH_CHECK(intercept.sizes() == at::IntArrayRef({m, k}), "intercept should have shape (", m,
              ", ", k, "), got ", intercept.sizes());
  TORCH_CHECK(lambdas.dim() == 1 && lambdas.size(0) == m, "lambdas should have length ", m,
              ", got shape ", lambdas.sizes());
  TORCH_CHECK(center.numel() == d && scale.numel() == d && eigvals.numel() == d,
              "center, scale and eigvals should have D = ", d, " entries, got ", center.numel(),
              ", ", scale.numel(), ", ", eigvals.numel());
  TORCH_CHECK(eigvecs.sizes() == at::IntArrayRef({d, d}) || eigvecs.numel() == 0,
              "eigvecs should be (", d, ", ", d, ") or empty (X in the eigenbasis), got ",
              eigvecs.sizes());
  TORCH_CHECK(tol >= 0, "tol should be >= 0, got ", tol);
  TORCH_CHECK(max_iter >= 0, "max_iter should be >= 0, got ", max_iter);
  TORCH_CHECK(history >= 1, "history should be >= 1, got ", history);
  TORCH_CHECK_VALUE(chunk_rows >= 0, "chunk_rows should be >= 0 (0: all rows at once), got ",
                    chunk_rows);
  TORCH_CHECK(products == "convert" || products == "split",
              "products should be 'convert' or 'split', got '", products, "'");
  split = products == "split";
  TORCH_CHECK(!split || ((X.scalar_type() == at::kHalf || X.scalar_type() == at::kBFloat16) &&
                         dt == at::kFloat),
              "products='split' needs float16 or bfloat16 X and float32 coef, got ",
              X.scalar_type(), " and ", dt);

  opts = coef.options();
  const auto lam_cpu = lambdas.to(at::kCPU, at::kDouble).contiguous();
  lam.assign(lam_cpu.data_ptr<double>(), lam_cpu.data_ptr<double>() + m);
  for (int64_t c = 0; c < m; ++c)
    TORCH_CHECK(lam[c] >= 0 && std::isfinite(lam[c]), "lambdas should be finite and >= 0, got ",
                lam[c]);
  lam_t = on_device(lambdas).view({1, m, 1});
  TORCH_CHECK_TYPE(at::isIntegralType(target.scalar_type(), /*includeBool=*/false),
                   "target should be an integer tensor of class indices, got ",
                   target.scalar_type());
  TORCH_CHECK_VALUE(k >= 1, "coef should have K >= 1 classes, got shape ", coef.sizes());
  y = target.to(dev, at::kLong).contiguous();
  w = on_device(weight);
  TORCH_CHECK(y.numel() == n && w.numel() == n, "target and weight should have N = ", n,
              " entries, got ", y.numel(), " and ", w.numel());
  // Once here, so the fused kernels skip the check (and its device sync) on every iteration.
  check_probe_targets(target, k);
  const auto ws = w.sum(at::kDouble).reshape({1});
  sum_ranks(ws);
  wsum = ws.item<double>();
  if (split) {
    const auto wm = w.abs().max().reshape({1});
    if (group) all_reduce(wm, *group, "max");
    wmax = wm.item<double>();
  } else {
    wmax = 0.0;
  }
  TORCH_CHECK(wsum > 0, "weights should have a positive sum, got ", wsum);
  // The feature scale divides every feature: zero or non-finite entries would give a zero or
  // NaN head without an error. One host read (a sync for a device scale), once per solve.
  if (d > 0) {
    const auto [lo, hi] = at::aminmax(scale.to(at::kDouble));
    const double scale_lo = lo.item<double>(), scale_hi = hi.item<double>();
    TORCH_CHECK_VALUE(scale_lo > 0 && std::isfinite(scale_hi),
                      "scale should hold finite values > 0, got values from ", scale_lo, " to ",
                      scale_hi);
  }
  inv_scale = on_device(scale).reciprocal().view({d, 1});
  ctr = on_device(center).view({1, d});
  in_eigenbasis = eigvecs.numel() == 0;
  if (!in_eigenbasis) Q = on_device(eigvecs);
  s = on_device(eigvals).clamp_min(0).view({d, 1, 1});
  chunk = chunk_rows > 0 ? std::min(chunk_rows, n) : n;
}

at::Tensor Problem::forward(const Pair& p) const {
  auto Wr = p.W.reshape({d, m * k}) * inv_scale;
  auto br = p.b.reshape({m * k}) - at::matmul(ctr, Wr).view({m * k});
  auto Z = at::empty({n, m * k}, opts);
  const auto Ws = split ? split_operand(Wr, X.scalar_type()) : SplitOperand{};
  // X @ W with 2 to 15 columns: W padded with zero columns to 16 (2-3x faster on the CPU, see
  // transpose_skinny; here the output is the large side, so padding beats transposing).
  const bool pad = !split && transpose_skinny(Wr);
  if (pad) {
    Wr = at::constant_pad_nd(Wr, {0, 16 - m * k});
    br = at::constant_pad_nd(br, {0, 16 - m * k});
  }
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t len = std::min(chunk, n - r0);
    auto out = Z.narrow(0, r0, len);
    if (pad)
      out.copy_(at::addmm(br, x_chunk(r0, len), Wr).narrow(1, 0, m * k));
    else if (!split)
      at::addmm_out(out, br, x_chunk(r0, len), Wr);
    else if (Ws.parts.empty())
      out.copy_(br.expand({len, m * k}));
    else
      at::add_out(out, br, split_mm(x_chunk(r0, len), Ws), Ws.inv_scale);
  }
  return Z;
}

Pair Problem::backward(const at::Tensor& G) const {
  // Rows 0..D-1: X^T G; row D: 1^T G. One buffer, so one all-reduce over the group.
  auto sums = at::zeros({d + 1, m * k}, opts);
  auto acc = sums.narrow(0, 0, d);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t len = std::min(chunk, n - r0);
    const auto xt = x_chunk(r0, len).t();
    const auto Gc = G.narrow(0, r0, len);
    if (!split) {
      if (transpose_skinny(Gc)) {
        acc.add_(mm_skinny(xt, Gc));
      } else {
        acc.addmm_(xt, Gc);
      }
      continue;
    }
    const auto Gs = split_operand(Gc, X.scalar_type(), wmax);
    if (!Gs.parts.empty()) acc.add_(split_mm(xt, Gs), Gs.inv_scale);
  }
  auto gs = sums.select(0, d);
  at::sum_out(gs, G, 0);
  sum_ranks(sums);
  acc.sub_(ctr.t() * gs.view({1, m * k})).mul_(inv_scale);
  return Pair{acc.view({d, m, k}), gs.view({m, k})};
}

Pair Problem::full_grad(const at::Tensor& G, const Pair& p) const {
  auto g = backward(G);
  g.W.div_(wsum).add_(lam_t * p.W);
  g.b.div_(wsum);
  return g;
}

using SolveResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                               at::Tensor, at::Tensor, at::Tensor>;

// Preconditioned L-BFGS over a Problem, all m values of C in step: each C stops on its own
// (then its direction is masked to zero) and the loop ends when none is active.
class Solver {
 public:
  Solver(const Problem& pb, const at::Tensor& coef, const at::Tensor& intercept, int64_t history)
      : pb_(pb), history_(history), iters_(pb.m, 0), stalled_(pb.m, 0) {
    x_ = Pair{coef.to(pb.dev, pb.dt).permute({1, 0, 2}).contiguous(),
              pb.on_device(intercept).clone()};
    Z_ = pb.forward(x_);
    std::tie(G_, stats_) = loss_grad();
    g_ = pb.full_grad(G_.view({pb.n, pb.m * pb.k}), x_);
    ge_ = pb.to_eig(g_);
  }

  // Starts from the pairs of the previous C of a path, packed (h, D + 1, K) (the intercept is
  // row D) in the eigenbasis of S, their y taken at history_lambda. The penalty's curvature is
  // lambda I, so moving a pair to this C's lambda is exact: y += (lambda - history_lambda) s. The
  // first step is then a quasi-Newton predictor along the path instead of a preconditioned
  // gradient step.
  void carry_history(const std::optional<at::Tensor>& history_s,
                     const std::optional<at::Tensor>& history_y, double history_lambda);
  SolveResult run(double tol, double gap_rtol, int64_t max_iter);

 private:
  std::tuple<at::Tensor, at::Tensor> loss_grad() const {
    auto out = probe_loss_grad(Z_.view({pb_.n, pb_.m, pb_.k}), pb_.y, pb_.w, /*check_target=*/false);
    pb_.sum_ranks(std::get<1>(out));
    return out;
  }
  // The max-abs gradient per C, on the host.
  at::Tensor grad_norm() const {
    return at::maximum(g_.W.abs().amax({0, 2}), g_.b.abs().amax(1)).to(at::kCPU, at::kDouble);
  }
  // Flags of the C not yet converged nor stalled. Converged: the max-abs gradient <= tol, the
  // gap <= tol and the gap <= gap_rtol times the objective (0: no relative test).
  std::vector<char> active_set(double tol, double gap_rtol) const;
  // gn_, a_, gap_ and obj_ at the current iterate.
  void measure() {
    gn_ = grad_norm();
    a_ = pb_.curvature(stats_);
    gap_ = pb_.gap(ge_, a_);
    const auto penalty = 0.5 * (pb_.lam_t * x_.W * x_.W).sum(at::IntArrayRef{0, 2});
    obj_ = (stats_.select(1, 0).to(at::kCPU, at::kDouble) / pb_.wsum +
            penalty.to(at::kCPU, at::kDouble))
               .contiguous();
  }
  // -H g by the two-loop recursion, the preconditioner (scaled by s'y / y'My) as the initial
  // inverse Hessian; in the eigenbasis, where the preconditioner is diagonal.
  Pair two_loop() const;
  // The step's direction, masked to the active C, in the eigenbasis, and g'dir on the host. A
  // direction that lost descent for an active C (round-off in the history) restarts from the
  // preconditioned gradient, with the history cleared.
  std::pair<Pair, at::Tensor> direction(const std::vector<char>& active);
  // Step lengths (m,) float64 on the host: a safeguarded Newton on phi(t) = f(x + t dir), convex
  // in t, stopped at the curvature condition kCurvatureC2 with a decrease (kArmijoC1), on the
  // cached logits Zd of dir. Marks as stalled an active C without a descent direction or without
  // a measurable decrease along it (its gradient at round-off level); it gets step 0.
  at::Tensor line_search(const Pair& dir, const at::Tensor& Zd, const at::Tensor& gd,
                         const std::vector<char>& active);
  // x += t dir (dir_eig: the same direction in the eigenbasis); logits, gradient and the new
  // pair.
  void take_step(const Pair& dir, const Pair& dir_eig, const at::Tensor& Zd,
                 const at::Tensor& step, int64_t it);
  // The op's outputs: (coef, intercept, n_iter, grad_norm, gap, loss, history_s, history_y).
  SolveResult result() const;

  const Problem& pb_;
  int64_t history_;
  Pair x_, g_, ge_;              // the iterate, its gradient, the gradient in the eigenbasis
  at::Tensor Z_, G_, stats_;     // its logits (N, m*K), logit gradients, loss statistics
  at::Tensor gn_, a_, gap_;      // max-abs gradient (host), curvature, objective gap (host)
  at::Tensor obj_;               // (m,) the objective, float64 on the host
  // CPU: the logits, gradient and loss statistics at the line search's last evaluation, and its
  // steps (empty: none evaluated)
  at::Tensor Zt_, Gt_, step_stats_;
  std::vector<double> evaluated_;
  std::deque<History> hist_;     // L-BFGS pairs, oldest first
  std::vector<int64_t> iters_;   // iterations per C
  std::vector<char> stalled_;    // C without a descent direction left
};

void Solver::carry_history(const std::optional<at::Tensor>& history_s,
                           const std::optional<at::Tensor>& history_y, double history_lambda) {
  if (!history_s.has_value() || !history_s->defined() || history_s->size(0) == 0) return;
  const int64_t d = pb_.d, m = pb_.m, k = pb_.k;
  TORCH_CHECK(history_y.has_value() && history_y->sizes() == history_s->sizes(),
              "history_y should have the shape of history_s");
  TORCH_CHECK(history_s->dim() == 3 && history_s->size(1) == d + 1 && history_s->size(2) == k,
              "history_s should be (h, D + 1, K) = (h, ", d + 1, ", ", k, "), got ",
              history_s->sizes());
  const auto hs = pb_.on_device(*history_s), hy = pb_.on_device(*history_y);
  const auto shift = pb_.lam_t - history_lambda;  // (1, m, 1)
  for (int64_t i = std::max<int64_t>(0, hs.size(0) - history_); i < hs.size(0); ++i) {
    auto sW = hs[i].narrow(0, 0, d).unsqueeze(1).expand({d, m, k}).contiguous();
    auto sb = hs[i][d].unsqueeze(0).expand({m, k}).contiguous();
    auto yW = hy[i].narrow(0, 0, d).unsqueeze(1) + shift * sW;
    auto yb = hy[i][d].unsqueeze(0).expand({m, k}).contiguous();
    const auto sp = pack(Pair{sW, sb}), yp = pack(Pair{yW, yb});
    hist_.push_back(History{sp, yp, inverse_curvature(packed_dot(sp, yp))});
  }
}

std::vector<char> Solver::active_set(double tol, double gap_rtol) const {
  const double* gn = gn_.data_ptr<double>();
  const double* gap = gap_.data_ptr<double>();
  const double* obj = obj_.data_ptr<double>();
  std::vector<char> active(pb_.m, 0);
  for (int64_t c = 0; c < pb_.m; ++c)
    active[c] = !stalled_[c] && (gn[c] > tol || gap[c] > tol ||
                                 (gap_rtol > 0 && gap[c] > gap_rtol * obj[c]));
  return active;
}

// sum x[i] y[i] over n contiguous values, in double (8 partial sums, vectorised in the AVX2 clone)
// and r[i] += a x[i]: the recursion's two passes.
template <typename T>
__attribute__((always_inline)) inline double dot_body(const T* __restrict x,
                                                      const T* __restrict y, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += double(x[i + l]) * double(y[i + l]);
  double sum = 0;
  for (; i < n; ++i) sum += double(x[i]) * double(y[i]);
  for (int l = 0; l < 8; ++l) sum += acc[l];
  return sum;
}
template <typename T>
__attribute__((always_inline)) inline void axpy_body(T* __restrict r, const T* __restrict x, T a,
                                                     int64_t n) {
  for (int64_t i = 0; i < n; ++i) r[i] += a * x[i];
}
PYROBUST_CLONES double dot_host(const float* x, const float* y, int64_t n) {
  return dot_body(x, y, n);
}
PYROBUST_CLONES double dot_host(const double* x, const double* y, int64_t n) {
  return dot_body(x, y, n);
}
PYROBUST_CLONES void axpy_host(float* r, const float* x, float a, int64_t n) {
  axpy_body(r, x, a, n);
}
PYROBUST_CLONES void axpy_host(double* r, const double* x, double a, int64_t n) {
  axpy_body(r, x, a, n);
}

// The two-loop recursion as plain loops over the packed pairs, for a solve on the CPU. A packed
// pair holds (D + 1) m K values, about 10^4 to 10^5 for a probe, where the recursion's ~4h ATen
// ops (h pairs) cost more in dispatch and allocation than in arithmetic (docs/probe-solver.md,
// "The recursion on the CPU"). Here every update and inner product is one pass; inner products
// accumulate in double. q: the packed -g on entry, the direction on return.
template <typename T>
void two_loop_host(T* q, const std::deque<History>& hist, const T* eig, const T* a,
                   const T* lam, int64_t d, int64_t m, int64_t k) {
  const int64_t rows = d + 1, h = static_cast<int64_t>(hist.size());
  // out[c]: the per-C inner products of packed x and y (a pair is one run of values for one C)
  std::vector<double> out(m);
  const auto dot = [&](const T* x, const T* y) {
    if (m == 1) {
      out[0] = dot_host(x, y, rows * k);
      return;
    }
    std::fill(out.begin(), out.end(), 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < m; ++c)
        out[c] += dot_host(x + (i * m + c) * k, y + (i * m + c) * k, k);
  };
  // r += coef[c] x, per C
  const auto axpy = [&](T* r, const T* x, const std::vector<T>& coef) {
    if (m == 1) return axpy_host(r, x, coef[0], rows * k);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < m; ++c)
        axpy_host(r + (i * m + c) * k, x + (i * m + c) * k, coef[c], k);
  };
  // the preconditioner's diagonal (a S + lambda)^-1 at (i, c); 1 / a for the intercept row
  const auto den = [&](int64_t i, int64_t c) { return i < d ? a[c] * eig[i] + lam[c] : a[c]; };

  std::vector<double> alpha(h * m);
  std::vector<T> coef(m);
  for (int64_t p = h - 1; p >= 0; --p) {
    TORCH_INTERNAL_ASSERT(hist[p].s.is_contiguous() && hist[p].y.is_contiguous() &&
                          hist[p].rho.is_contiguous());
    const T* rho = hist[p].rho.template data_ptr<T>();
    dot(hist[p].s.template data_ptr<T>(), q);
    for (int64_t c = 0; c < m; ++c) {
      alpha[p * m + c] = double(rho[c]) * out[c];
      coef[c] = static_cast<T>(-alpha[p * m + c]);
    }
    axpy(q, hist[p].y.template data_ptr<T>(), coef);
  }
  // The initial inverse Hessian: the preconditioner scaled by s'y / y'My of the newest pair.
  std::vector<T> gam(m, T(1));
  if (h > 0) {
    const T* y = hist.back().y.template data_ptr<T>();
    const T* rho = hist.back().rho.template data_ptr<T>();
    std::vector<double> ymy(m, 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < m; ++c) {
        const int64_t o = (i * m + c) * k;
        const T dn = den(i, c);
        double acc = 0;
        for (int64_t j = 0; j < k; ++j) acc += double(y[o + j]) * double(y[o + j] / dn);
        ymy[c] += acc;
      }
    for (int64_t c = 0; c < m; ++c) {
      const double g = rho[c] > 0 ? 1.0 / (double(rho[c]) * ymy[c]) : 1.0;
      gam[c] = std::isfinite(g) && g > 0 ? static_cast<T>(g) : T(1);
    }
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < m; ++c) {
      const int64_t o = (i * m + c) * k;
      const T dn = den(i, c);
      for (int64_t j = 0; j < k; ++j) q[o + j] = q[o + j] / dn * gam[c];
    }
  for (int64_t p = 0; p < h; ++p) {
    const T* rho = hist[p].rho.template data_ptr<T>();
    dot(hist[p].y.template data_ptr<T>(), q);
    for (int64_t c = 0; c < m; ++c)
      coef[c] = static_cast<T>(alpha[p * m + c] - double(rho[c]) * out[c]);
    axpy(q, hist[p].s.template data_ptr<T>(), coef);
  }
}

Pair Solver::two_loop() const {
  const int64_t m = pb_.m;
  auto q = pack(Pair{-ge_.W, -ge_.b});
  if (pb_.dev.is_cpu()) {
    const auto a = a_.contiguous(), eig = pb_.s.contiguous(), lam = pb_.lam_t.contiguous();
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "probe_two_loop", [&] {
      two_loop_host<scalar_t>(q.data_ptr<scalar_t>(), hist_, eig.data_ptr<scalar_t>(),
                              a.data_ptr<scalar_t>(), lam.data_ptr<scalar_t>(), pb_.d, m, pb_.k);
    });
    return unpack(q);
  }
  const auto per_c = [m](const at::Tensor& v) { return v.view({1, m, 1}); };
  std::vector<at::Tensor> alphas;
  for (auto h = hist_.rbegin(); h != hist_.rend(); ++h) {
    auto al = h->rho * packed_dot(h->s, q);
    q.addcmul_(h->y, per_c(al), -1);
    alphas.push_back(al);
  }
  auto r = pack(pb_.precondition(unpack(q), a_));
  if (!hist_.empty()) {
    const auto& h = hist_.back();
    const auto py = pack(pb_.precondition(unpack(h.y), a_));
    auto gam = at::where(h.rho > 0, 1.0 / (h.rho * packed_dot(h.y, py)), at::ones_like(h.rho));
    gam = at::where(at::isfinite(gam) & (gam > 0), gam, at::ones_like(gam));
    r.mul_(per_c(gam));
  }
  for (size_t j = 0; j < hist_.size(); ++j) {
    const auto& h = hist_[j];
    const auto& al = alphas[hist_.size() - 1 - j];
    r.addcmul_(h.s, per_c(al - h.rho * packed_dot(h.y, r)));
  }
  return unpack(r);
}

std::pair<Pair, at::Tensor> Solver::direction(const std::vector<char>& active) {
  const int64_t m = pb_.m;
  auto mask = at::empty({m}, at::dtype(pb_.dt));
  for (int64_t c = 0; c < m; ++c) mask[c] = active[c] ? 1.0 : 0.0;
  mask = mask.to(pb_.dev);
  const auto masked = [&](const Pair& p) {
    return Pair{p.W * mask.view({1, m, 1}), p.b * mask.view({m, 1})};
  };
  Pair dir = masked(two_loop());
  auto gd = dot(ge_, dir).to(at::kCPU, at::kDouble);
  bool lost = false;
  for (int64_t c = 0; c < m; ++c) lost = lost || (active[c] && !(gd.data_ptr<double>()[c] < 0));
  if (lost) {
    hist_.clear();
    dir = masked(pb_.precondition(Pair{-ge_.W, -ge_.b}, a_));
    gd = dot(ge_, dir).to(at::kCPU, at::kDouble);
  }
  return {dir, gd};
}

at::Tensor Solver::line_search(const Pair& dir, const at::Tensor& Zd, const at::Tensor& gd,
                               const std::vector<char>& active) {
  const int64_t n = pb_.n, m = pb_.m, k = pb_.k;
  const double* gdp = gd.data_ptr<double>();
  // phi'(t) = G'(t) dir / sum w + lambda (W'dir + t |dir|^2): the penalty sees the coefficients
  // only, never the intercept.
  const auto wd = (x_.W * dir.W).sum(at::IntArrayRef{0, 2}).to(at::kCPU, at::kDouble);
  const auto dd = (dir.W * dir.W).sum(at::IntArrayRef{0, 2}).to(at::kCPU, at::kDouble);
  const double eps = pb_.dt == at::kFloat ? std::numeric_limits<float>::epsilon()
                                          : std::numeric_limits<double>::epsilon();
  auto step = at::zeros({m}, at::dtype(at::kDouble));
  double* t = step.data_ptr<double>();
  std::vector<double> lo(m, 0.0), hi(m, std::numeric_limits<double>::infinity());
  std::vector<char> done(m, 1);
  for (int64_t c = 0; c < m; ++c) {
    if (active[c] && gdp[c] < 0) {
      t[c] = 1.0;
      done[c] = 0;
    } else if (active[c]) {
      stalled_[c] = 1;  // no descent direction left: the gradient is at round-off level
    }
  }
  // On the CPU each evaluation also writes the logits and gradient at its steps (Zt_, Gt_):
  // the last one is at the step taken (take_step).
  const bool fused = pb_.dev.is_cpu();
  if (fused && !Zt_.defined()) {
    Zt_ = at::empty_like(Z_);
    Gt_ = at::empty({n, m, k}, Z_.options());
  }
  evaluated_.clear();
  for (int ls = 0; ls < kLineSearchSteps; ++ls) {
    if (std::all_of(done.begin(), done.end(), [](char v) { return v != 0; })) break;
    at::Tensor st;
    if (fused) {
      std::tie(st, step_stats_) = probe_line_stats_step_cpu(
          Z_.view({n, m, k}), Zd.view({n, m, k}), pb_.y, pb_.w, step, Zt_.view({n, m, k}), Gt_);
      evaluated_.assign(t, t + m);
    } else {
      st = probe_line_stats(Z_.view({n, m, k}), Zd.view({n, m, k}), pb_.y, pb_.w,
                            step.to(pb_.dev), /*check_target=*/false);
    }
    pb_.sum_ranks(st);
    st = st.to(at::kCPU).contiguous();
    const double* sp = st.data_ptr<double>();
    for (int64_t c = 0; c < m; ++c) {
      if (done[c]) continue;
      const double lam = pb_.lam[c];
      const double d1 = sp[c * kLineStats + 1] / pb_.wsum +
                        lam * (wd.data_ptr<double>()[c] + t[c] * dd.data_ptr<double>()[c]);
      const double d2 = sp[c * kLineStats + 2] / pb_.wsum + lam * dd.data_ptr<double>()[c];
      const double dphi = sp[c * kLineStats + 3] / pb_.wsum +
                          lam * t[c] * (wd.data_ptr<double>()[c] +
                                        0.5 * t[c] * dd.data_ptr<double>()[c]);
      const double slack = kLossNoise * eps * sp[c * kLineStats + 4] / pb_.wsum;
      const bool decrease = dphi <= kArmijoC1 * t[c] * gdp[c] + slack;
      const auto finish = [&] {
        done[c] = 1;
        if (!decrease) {
          t[c] = 0.0;
          stalled_[c] = 1;
        }
      };
      if ((decrease && std::abs(d1) <= kCurvatureC2 * std::abs(gdp[c])) ||
          ls == kLineSearchSteps - 1) {
        finish();
        continue;
      }
      if (d1 > 0 || !decrease) hi[c] = t[c]; else lo[c] = t[c];
      double tn = d2 > 0 ? t[c] - d1 / d2 : std::numeric_limits<double>::quiet_NaN();
      if (!(tn > lo[c] && tn < hi[c]))
        tn = std::isfinite(hi[c]) ? 0.5 * (lo[c] + hi[c]) : 4.0 * t[c];
      if (std::abs(tn - t[c]) <= 1e-10 * t[c]) {
        finish();
        continue;
      }
      t[c] = tn;
    }
  }
  return step;
}

void Solver::take_step(const Pair& dir, const Pair& dir_eig, const at::Tensor& Zd,
                       const at::Tensor& step, int64_t it) {
  const int64_t n = pb_.n, m = pb_.m, k = pb_.k;
  const auto tt = step.to(pb_.dev, pb_.dt);
  x_.W.add_(dir.W * tt.view({1, m, 1}));
  x_.b.add_(dir.b * tt.view({m, 1}));
  const auto sstep = pack(dir_eig).mul_(tt.view({1, m, 1}));
  const bool at_evaluated =
      static_cast<int64_t>(evaluated_.size()) == m &&
      std::equal(evaluated_.begin(), evaluated_.end(), step.data_ptr<double>());
  if ((it + 1) % kRefreshLogits != 0 && at_evaluated) {
    std::swap(Z_, Zt_);  // the line search's last evaluation, at this step
    std::swap(G_, Gt_);
    stats_ = step_stats_;
    pb_.sum_ranks(stats_);
  } else {
    if ((it + 1) % kRefreshLogits == 0) {
      Z_ = pb_.forward(x_);
    } else if (m == 1) {
      Z_.add_(Zd, step.data_ptr<double>()[0]);
    } else {
      Z_.view({n, m, k}).addcmul_(Zd.view({n, m, k}), tt.view({1, m, 1}));
    }
    std::tie(G_, stats_) = loss_grad();
  }
  g_ = pb_.full_grad(G_.view({n, m * k}), x_);
  Pair nge = pb_.to_eig(g_);
  const auto yv = pack(nge).sub_(pack(ge_));
  hist_.push_back(History{sstep, yv, inverse_curvature(packed_dot(sstep, yv))});
  if (static_cast<int64_t>(hist_.size()) > history_) hist_.pop_front();
  ge_ = nge;
  measure();
}

SolveResult Solver::run(double tol, double gap_rtol, int64_t max_iter) {
  measure();
  for (int64_t it = 0; it < max_iter; ++it) {
    const std::vector<char> active = active_set(tol, gap_rtol);
    if (std::none_of(active.begin(), active.end(), [](char v) { return v != 0; })) break;
    const auto [dir_eig, gd] = direction(active);
    const Pair dir = pb_.from_eig(dir_eig);
    const auto Zd = pb_.forward(dir);
    const auto step = line_search(dir, Zd, gd, active);
    take_step(dir, dir_eig, Zd, step, it);
    for (int64_t c = 0; c < pb_.m; ++c) iters_[c] += active[c];
  }
  return result();
}

SolveResult Solver::result() const {
  const int64_t d = pb_.d, m = pb_.m, k = pb_.k;
  auto n_iter = at::empty({m}, at::dtype(at::kLong));
  for (int64_t c = 0; c < m; ++c) n_iter[c] = iters_[c];
  auto loss = (stats_.select(1, 0) / pb_.wsum).to(at::kCPU, at::kDouble);
  // The last column's pairs, packed for the next C of the path (in the eigenbasis).
  const int64_t h = static_cast<int64_t>(hist_.size());
  auto out_s = at::empty({h, d + 1, k}, pb_.opts), out_y = at::empty({h, d + 1, k}, pb_.opts);
  for (int64_t i = 0; i < h; ++i) {
    out_s[i].copy_(hist_[i].s.select(1, m - 1));
    out_y[i].copy_(hist_[i].y.select(1, m - 1));
  }
  return {x_.W.permute({1, 0, 2}).contiguous(), x_.b, n_iter, gn_, gap_, loss, out_s, out_y};
}

SolveResult probe_solve(const at::Tensor& X, const at::Tensor& target, const at::Tensor& weight,
                        const at::Tensor& lambdas, const at::Tensor& coef,
                        const at::Tensor& intercept, const at::Tensor& center,
                        const at::Tensor& scale, const at::Tensor& eigvecs,
                        const at::Tensor& eigvals, double tol, int64_t max_iter, int64_t history,
                        int64_t chunk_rows, const std::optional<at::Tensor>& history_s,
                        const std::optional<at::Tensor>& history_y, double history_lambda,
                        std::string_view products,
                        const std::optional<std::string_view>& group_name, double gap_rtol) {
  TORCH_CHECK(gap_rtol >= 0, "gap_rtol should be >= 0, got ", gap_rtol);
  const Problem problem(X, target, weight, lambdas, coef, intercept, center, scale, eigvecs,
                        eigvals, tol, max_iter, history, chunk_rows, products, group_name);
  Solver solver(problem, coef, intercept, history);
  solver.carry_history(history_s, history_y, history_lambda);
  return solver.run(tol, gap_rtol, max_iter);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, CompositeExplicitAutograd, m) {
  m.impl("probe_solve", &probe_solve);
}

}  // namespace pyrobust
