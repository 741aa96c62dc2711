// The probe solver loop: L2-regularised logistic regression (scikit-learn's objective) for m
// values of C at once, on any device. Device-generic (CompositeExplicitAutograd): the products
// go through ATen (MKL / cuBLAS) and the fused kernels through the dispatcher.
//
// Model on internal features u = (x - center) / scale (center makes the intercept decouple from
// the coefficients in the Hessian bound below; it is a reparametrisation, the intercept being
// unpenalised):  logits = u W + b,  objective = sum_n w_n loss_n / sum w + lambda / 2 |W|^2.
// X is never modified or copied whole: it is read in chunks of `chunk_rows` rows, each converted
// to the compute dtype / device on the fly (a memory map or a host tensor with a CUDA solve), or,
// with products="split", kept in its float16 / bfloat16 storage (see SplitOperand below).
//
// Method (chosen by measurement, see pyrobust/probe/sweep.py): L-BFGS whose initial inverse
// Hessian is (a * S + lambda I)^-1, S = eigvecs diag(eigvals) eigvecs^T the covariance of u and
// a the current mean curvature of the loss (a Boehning-type bound made tighter with the
// probabilities at hand), scaled each step by the usual s'y / y'Hy. Each iteration costs one pass
// X @ [direction] and one X^T @ G; the line search is an exact 1-D Newton on the cached logits of
// the direction, costing no product with X.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <optional>
#include <vector>

#include "ops/probe.h"

namespace pyrobust {
namespace {

struct Pair {  // a (coefficients, intercept) pair: (D, m, K) and (m, K)
  at::Tensor W, b;
};

struct History {
  Pair s, y;
  at::Tensor rho;  // (m,) compute dtype; 0 disables the pair for that C
};

// products="split": the float32 operand B of a product with half-precision X is written as
//   B = (B_0 + B_1 2^-b + B_2 2^-2b) / s,
// parts in X's dtype (b its significand bits: 11 for float16, 8 for bfloat16; two float16 parts,
// three bfloat16 parts), s a power of two putting max |B| s in [2^14, 2^15) (float16 reaches
// 65504). Each part takes the rounding error of the previous one, so the parts carry about 23
// (float16, measured 2^-23) or 24 (bfloat16) significand bits, and X @ B is their products with X
// summed in float32: a float32 product to round-off, run as 2-3 tensor-core GEMMs with float32
// accumulation and output (at::mm with out_dtype) instead of one float32 GEMM over X converted,
// which on an H100/H200 is ~67 TFLOPS against ~990 for float16. On a CPU the part products run
// emulated (converted back to float32), so the split is tested where no GPU is.
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

using SolveResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                               at::Tensor, at::Tensor, at::Tensor>;

SolveResult probe_solve(const at::Tensor& X, const at::Tensor& target, const at::Tensor& weight,
                        const at::Tensor& lambdas, const at::Tensor& coef,
                        const at::Tensor& intercept, const at::Tensor& center,
                        const at::Tensor& scale, const at::Tensor& eigvecs,
                        const at::Tensor& eigvals, double tol, int64_t max_iter, int64_t history,
                        int64_t chunk_rows, const std::optional<at::Tensor>& history_s,
                        const std::optional<at::Tensor>& history_y, double history_lambda,
                        c10::string_view products) {
  TORCH_CHECK(X.dim() == 2, "X should be a 2-D (N, D) tensor, got ", X.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(X.scalar_type()), "X should be a floating tensor, got ",
              X.scalar_type());
  TORCH_CHECK(coef.dim() == 3, "coef should be a 3-D (m, D, K) tensor, got ", coef.dim(), "-D");
  const int64_t n = X.size(0), d = X.size(1), m = coef.size(0), k = coef.size(2);
  TORCH_CHECK(n > 0, "X should have at least one row");
  TORCH_CHECK(coef.size(1) == d, "coef should have D = ", d, " rows per C, got ", coef.size(1));
  const auto dt = coef.scalar_type();
  const auto dev = coef.device();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble, "coef should be float32 or float64, got ", dt);
  TORCH_CHECK(intercept.sizes() == at::IntArrayRef({m, k}), "intercept should have shape (", m,
              ", ", k, "), got ", intercept.sizes());
  TORCH_CHECK(lambdas.dim() == 1 && lambdas.size(0) == m, "lambdas should have length ", m,
              ", got shape ", lambdas.sizes());
  TORCH_CHECK(center.numel() == d && scale.numel() == d && eigvals.numel() == d,
              "center, scale and eigvals should have D = ", d, " entries, got ", center.numel(),
              ", ", scale.numel(), ", ", eigvals.numel());
  TORCH_CHECK(eigvecs.sizes() == at::IntArrayRef({d, d}), "eigvecs should be (", d, ", ", d,
              "), got ", eigvecs.sizes());
  TORCH_CHECK(tol >= 0, "tol should be >= 0, got ", tol);
  TORCH_CHECK(max_iter >= 0, "max_iter should be >= 0, got ", max_iter);
  TORCH_CHECK(history >= 1, "history should be >= 1, got ", history);
  TORCH_CHECK(products == "convert" || products == "split",
              "products should be 'convert' or 'split', got '", products, "'");
  const bool split = products == "split";
  TORCH_CHECK(!split || ((X.scalar_type() == at::kHalf || X.scalar_type() == at::kBFloat16) &&
                         dt == at::kFloat),
              "products='split' needs float16 or bfloat16 X and float32 coef, got ",
              X.scalar_type(), " and ", dt);

  const auto opts = coef.options();
  const auto on = [&](const at::Tensor& t) { return t.to(dev, dt).contiguous(); };
  auto lam_cpu = lambdas.to(at::kCPU, at::kDouble).contiguous();
  const double* lam = lam_cpu.data_ptr<double>();
  for (int64_t c = 0; c < m; ++c)
    TORCH_CHECK(lam[c] >= 0 && std::isfinite(lam[c]), "lambdas should be finite and >= 0, got ",
                lam[c]);
  const auto lam_t = on(lambdas).view({1, m, 1});
  TORCH_CHECK_TYPE(at::isIntegralType(target.scalar_type(), /*includeBool=*/false),
                   "target should be an integer tensor of class indices, got ",
                   target.scalar_type());
  TORCH_CHECK_VALUE(k >= 1, "coef should have K >= 1 classes, got shape ", coef.sizes());
  const auto y = target.to(dev, at::kLong).contiguous();
  const auto w = on(weight);
  TORCH_CHECK(y.numel() == n && w.numel() == n, "target and weight should have N = ", n,
              " entries, got ", y.numel(), " and ", w.numel());
  // Once here, so the fused kernels skip the check (and its device sync) on every iteration.
  check_probe_targets(target, k);
  const double wsum = w.sum(at::kDouble).item<double>();
  // |G| = |w| |p - onehot| <= max |w|: the bound that scales G's split (no pass over G for it).
  const double wmax = split ? w.abs().max().item<double>() : 0.0;
  TORCH_CHECK(wsum > 0, "weights should have a positive sum, got ", wsum);
  const auto inv_scale = on(scale).reciprocal().view({d, 1});
  const auto ctr = on(center).view({1, d});
  const auto Q = on(eigvecs);
  const auto s = on(eigvals).clamp_min(0).view({d, 1, 1});
  const int64_t chunk = chunk_rows > 0 ? std::min(chunk_rows, n) : n;
  // Line search: accept a step once |phi'(t)| <= 0.9 |phi'(0)| (the strong Wolfe curvature
  // condition of L-BFGS); on 20,000 x 512 x 100, 8 C, this took 142 iterations against 304 for a
  // near-exact search (0.1), the quasi-Newton step being accepted at t = 1 most of the time.
  constexpr double ls_c2 = 0.9;

  auto x_chunk = [&](int64_t r0, int64_t len) {
    return split ? X.narrow(0, r0, len).to(dev) : X.narrow(0, r0, len).to(dev, dt);
  };
  // logits (N, m*K) of the internal model (W, b), folded onto raw features.
  auto forward = [&](const Pair& p) {
    const auto Wr = p.W.reshape({d, m * k}) * inv_scale;
    const auto br = p.b.reshape({m * k}) - at::matmul(ctr, Wr).view({m * k});
    auto Z = at::empty({n, m * k}, opts);
    const auto Ws = split ? split_operand(Wr, X.scalar_type()) : SplitOperand{};
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
      const int64_t len = std::min(chunk, n - r0);
      auto out = Z.narrow(0, r0, len);
      if (!split)
        at::addmm_out(out, br, x_chunk(r0, len), Wr);
      else if (Ws.parts.empty())
        out.copy_(br.expand({len, m * k}));
      else
        at::add_out(out, br, split_mm(x_chunk(r0, len), Ws), Ws.inv_scale);
    }
    return Z;
  };
  // Unnormalised data gradient (u^T G, 1^T G) from per-sample logit gradients G (N, m*K).
  auto backward = [&](const at::Tensor& G) {
    auto acc = at::zeros({d, m * k}, opts);
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
      const int64_t len = std::min(chunk, n - r0);
      const auto xt = x_chunk(r0, len).t();
      const auto Gc = G.narrow(0, r0, len);
      if (!split) {
        acc.addmm_(xt, Gc);
        continue;
      }
      const auto Gs = split_operand(Gc, X.scalar_type(), wmax);
      if (!Gs.parts.empty()) acc.add_(split_mm(xt, Gs), Gs.inv_scale);
    }
    const auto gs = G.sum(0);
    acc.sub_(ctr.t() * gs.view({1, m * k})).mul_(inv_scale);
    return Pair{acc.view({d, m, k}), gs.view({m, k})};
  };
  auto dot = [&](const Pair& a, const Pair& b) {  // (m,) per-C inner products
    return (a.W * b.W).sum(at::IntArrayRef{0, 2}) + (a.b * b.b).sum(1);
  };
  auto full_grad = [&](const at::Tensor& G, const Pair& p) {
    auto g = backward(G);
    g.W.div_(wsum).add_(lam_t * p.W);
    g.b.div_(wsum);
    return g;
  };
  auto grad_norm = [&](const Pair& g) {
    return at::maximum(g.W.abs().amax({0, 2}), g.b.abs().amax(1)).to(at::kCPU, at::kDouble);
  };
  // (a S + lambda)^-1 in the eigenbasis of S for the coefficients, 1 / a for the intercept.
  auto precond = [&](const Pair& g, const at::Tensor& a) {
    auto r = at::matmul(Q.t(), g.W.reshape({d, m * k})).view({d, m, k});
    r = r / (a.view({1, m, 1}) * s + lam_t);
    return Pair{at::matmul(Q, r.reshape({d, m * k})).view({d, m, k}), g.b / a.view({m, 1})};
  };

  Pair x{coef.to(dev, dt).permute({1, 0, 2}).contiguous(), on(intercept).clone()};
  auto Z = forward(x);
  auto [G, stats] = probe_loss_grad(Z.view({n, m, k}), y, w, /*check_target=*/false);
  Pair g = full_grad(G.view({n, m * k}), x);
  std::deque<History> hist;
  // Pairs carried over from the previous C of a path, packed (h, D + 1, K) (the intercept is row
  // D), their y taken at history_lambda. The penalty's curvature is lambda I, so moving the pair
  // to this C's lambda is exact: y += (lambda - history_lambda) s. The first step is then a
  // quasi-Newton predictor along the path instead of a preconditioned gradient step.
  if (history_s.has_value() && history_s->defined() && history_s->size(0) > 0) {
    TORCH_CHECK(history_y.has_value() && history_y->sizes() == history_s->sizes(),
                "history_y should have the shape of history_s");
    TORCH_CHECK(history_s->dim() == 3 && history_s->size(1) == d + 1 && history_s->size(2) == k,
                "history_s should be (h, D + 1, K) = (h, ", d + 1, ", ", k, "), got ",
                history_s->sizes());
    const auto hs = on(*history_s), hy = on(*history_y);
    const auto shift = lam_t - history_lambda;  // (1, m, 1)
    for (int64_t i = std::max<int64_t>(0, hs.size(0) - history); i < hs.size(0); ++i) {
      auto sW = hs[i].narrow(0, 0, d).unsqueeze(1).expand({d, m, k}).contiguous();
      auto sb = hs[i][d].unsqueeze(0).expand({m, k}).contiguous();
      auto yW = hy[i].narrow(0, 0, d).unsqueeze(1) + shift * sW;
      auto yb = hy[i][d].unsqueeze(0).expand({m, k}).contiguous();
      Pair sp{sW, sb}, yp{yW, yb};
      auto sy = dot(sp, yp);
      hist.push_back(History{sp, yp, at::where(sy > 0, sy.reciprocal(), at::zeros_like(sy))});
    }
  }
  std::vector<int64_t> iters(m, 0);
  std::vector<char> stalled(m, 0);
  // Newton-decrement estimate g' M g (M the preconditioner, about the inverse Hessian): twice
  // the objective gap. The max-abs gradient alone is not enough on a path: at weak
  // regularisation the warm start's gradient (lambda_new - lambda_old) W is tiny while the
  // optimum is far along directions the data barely curves; g' M g sees that distance.
  // The mean curvature a of the preconditioner, from the fused pass's statistics.
  auto curvature = [&] { return (stats.select(1, 1) / wsum).clamp_min(1e-12).to(dev, dt); };
  auto gap_of = [&](const Pair& gr, const at::Tensor& a) {
    return (0.5 * dot(gr, precond(gr, a))).to(at::kCPU, at::kDouble);
  };
  auto a = curvature();
  auto gn = grad_norm(g);
  auto gap = gap_of(g, a);

  for (int64_t it = 0; it < max_iter; ++it) {
    const double* gnp = gn.data_ptr<double>();
    std::vector<char> active(m, 0);
    bool any = false;
    for (int64_t c = 0; c < m; ++c) {
      active[c] = !stalled[c] && (gnp[c] > tol || gap.data_ptr<double>()[c] > tol);
      any = any || active[c];
    }
    if (!any) break;
    auto mask = at::empty({m}, at::dtype(dt));
    for (int64_t c = 0; c < m; ++c) mask[c] = active[c] ? 1.0 : 0.0;
    mask = mask.to(dev);

    // Two-loop recursion with the preconditioner as the initial inverse Hessian.
    Pair q{-g.W, -g.b};
    std::vector<at::Tensor> alphas;
    for (auto h = hist.rbegin(); h != hist.rend(); ++h) {
      auto al = h->rho * dot(h->s, q);
      q.W = q.W - al.view({1, m, 1}) * h->y.W;
      q.b = q.b - al.view({m, 1}) * h->y.b;
      alphas.push_back(al);
    }
    Pair r = precond(q, a);
    if (!hist.empty()) {
      const auto& h = hist.back();
      const auto py = precond(h.y, a);
      auto gam = at::where(h.rho > 0, 1.0 / (h.rho * dot(h.y, py)), at::ones_like(h.rho));
      gam = at::where(at::isfinite(gam) & (gam > 0), gam, at::ones_like(gam));
      r.W = r.W * gam.view({1, m, 1});
      r.b = r.b * gam.view({m, 1});
    }
    for (size_t j = 0; j < hist.size(); ++j) {
      const auto& h = hist[j];
      const auto& al = alphas[hist.size() - 1 - j];
      auto be = h.rho * dot(h.y, r);
      r.W = r.W + (al - be).view({1, m, 1}) * h.s.W;
      r.b = r.b + (al - be).view({m, 1}) * h.s.b;
    }
    Pair dir{r.W * mask.view({1, m, 1}), r.b * mask.view({m, 1})};
    auto gd = dot(g, dir).to(at::kCPU, at::kDouble);
    bool bad = false;
    for (int64_t c = 0; c < m; ++c) bad = bad || (active[c] && !(gd.data_ptr<double>()[c] < 0));
    if (bad) {  // lost descent (round-off in the history): restart from the preconditioned gradient
      hist.clear();
      auto p = precond(Pair{-g.W, -g.b}, a);
      dir = Pair{p.W * mask.view({1, m, 1}), p.b * mask.view({m, 1})};
      gd = dot(g, dir).to(at::kCPU, at::kDouble);
    }
    const double* gdp = gd.data_ptr<double>();
    const auto Zd = forward(dir);

    // Line search: safeguarded Newton on phi(t) = f(x + t dir), convex in t, stopped at the
    // Wolfe curvature condition above.
    // The penalty sees the coefficients only, never the intercept.
    const auto wd = (x.W * dir.W).sum(at::IntArrayRef{0, 2}).to(at::kCPU, at::kDouble);
    const auto dd = (dir.W * dir.W).sum(at::IntArrayRef{0, 2}).to(at::kCPU, at::kDouble);
    auto step = at::zeros({m}, at::dtype(at::kDouble));
    double* t = step.data_ptr<double>();
    std::vector<double> lo(m, 0.0), hi(m, std::numeric_limits<double>::infinity());
    std::vector<char> done(m, 1);
    for (int64_t c = 0; c < m; ++c) {
      if (active[c] && gdp[c] < 0) {
        t[c] = 1.0;
        done[c] = 0;
      } else if (active[c]) {
        stalled[c] = 1;  // no descent direction left: the gradient is at round-off level
      }
    }
    for (int ls = 0; ls < 20; ++ls) {
      bool pending = false;
      for (int64_t c = 0; c < m; ++c) pending = pending || !done[c];
      if (!pending) break;
      const auto st = probe_line_stats(Z.view({n, m, k}), Zd.view({n, m, k}), y, w,
                                       step.to(dev), /*check_target=*/false)
                          .to(at::kCPU)
                          .contiguous();
      const double* sp = st.data_ptr<double>();
      for (int64_t c = 0; c < m; ++c) {
        if (done[c]) continue;
        const double d1 = sp[c * kLineStats + 1] / wsum + lam[c] * (wd.data_ptr<double>()[c] +
                                                                      t[c] * dd.data_ptr<double>()[c]);
        const double d2 = sp[c * kLineStats + 2] / wsum + lam[c] * dd.data_ptr<double>()[c];
        if (std::abs(d1) <= ls_c2 * std::abs(gdp[c]) || ls == 19) {
          done[c] = 1;
          continue;
        }
        if (d1 > 0) hi[c] = t[c]; else lo[c] = t[c];
        double tn = d2 > 0 ? t[c] - d1 / d2 : std::numeric_limits<double>::quiet_NaN();
        if (!(tn > lo[c] && tn < hi[c]))
          tn = std::isfinite(hi[c]) ? 0.5 * (lo[c] + hi[c]) : 4.0 * t[c];
        if (std::abs(tn - t[c]) <= 1e-10 * t[c]) done[c] = 1;
        t[c] = tn;
      }
    }
    const auto tt = step.to(dev, dt);
    Pair sstep{dir.W * tt.view({1, m, 1}), dir.b * tt.view({m, 1})};
    x.W.add_(sstep.W);
    x.b.add_(sstep.b);
    if ((it + 1) % 100 == 0) {
      Z = forward(x);  // bound the drift of the incrementally updated logits
    } else {
      if (m == 1)
        Z.add_(Zd, t[0]);
      else
        Z.view({n, m, k}).addcmul_(Zd.view({n, m, k}), tt.view({1, m, 1}));
    }
    std::tie(G, stats) = probe_loss_grad(Z.view({n, m, k}), y, w, /*check_target=*/false);
    Pair ng = full_grad(G.view({n, m * k}), x);
    Pair yv{ng.W - g.W, ng.b - g.b};
    auto sy = dot(sstep, yv);
    auto rho = at::where(sy > 0, sy.reciprocal(), at::zeros_like(sy));
    hist.push_back(History{sstep, yv, rho});
    if (static_cast<int64_t>(hist.size()) > history) hist.pop_front();
    g = ng;
    gn = grad_norm(g);
    a = curvature();
    gap = gap_of(g, a);
    for (int64_t c = 0; c < m; ++c) iters[c] += active[c];
  }

  auto n_iter = at::empty({m}, at::dtype(at::kLong));
  for (int64_t c = 0; c < m; ++c) n_iter[c] = iters[c];
  auto loss = (stats.select(1, 0) / wsum).to(at::kCPU, at::kDouble);
  // The last column's pairs, packed for the next C of the path.
  const int64_t h = static_cast<int64_t>(hist.size());
  auto out_s = at::empty({h, d + 1, k}, opts), out_y = at::empty({h, d + 1, k}, opts);
  for (int64_t i = 0; i < h; ++i) {
    const auto& e = hist[i];
    out_s[i].narrow(0, 0, d).copy_(e.s.W.select(1, m - 1));
    out_s[i][d].copy_(e.s.b[m - 1]);
    out_y[i].narrow(0, 0, d).copy_(e.y.W.select(1, m - 1));
    out_y[i][d].copy_(e.y.b[m - 1]);
  }
  return {x.W.permute({1, 0, 2}).contiguous(), x.b, n_iter, gn, gap, loss, out_s, out_y};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, CompositeExplicitAutograd, m) {
  m.impl("probe_solve", &probe_solve);
}

}  // namespace pyrobust
