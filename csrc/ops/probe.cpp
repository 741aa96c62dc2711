// pyrobust::probe family: schemas and the argument checks every backend relies on.
//
// Logits are laid out (N, m, K): N samples, m values of C solved jointly, K classes. K == 1 is
// the binomial model (sigmoid, target in {0, 1}) that scikit-learn fits for two classes; K >= 2
// is the multinomial model (softmax). Weights are per-sample (already multiplied by any class
// weight); sums are float64 whatever the compute dtype.
//
//   probe_loss_grad(logits, target, weight, *, check_target=True) -> (grad, stats)
//     grad[n,c,:] = weight[n] * (p[n,c,:] - onehot(target[n]))   (same dtype as logits)
//     stats[c] = (sum_n weight[n] * loss[n,c], sum_n weight[n] * curvature[n,c])   float64 (m, 2)
//     curvature = p(1-p) (binomial) or (1 - |p|^2) / (K - 1) (multinomial): the mean eigenvalue
//     of the per-sample Hessian block, used by the solver to scale its preconditioner.
//   probe_line_stats(logits, direction, target, weight, step, *, check_target=True) -> (m, 5)
//     loss, first and second derivative in t of sum_n weight[n] * loss(logits + t * direction)
//     at t = step[c], its change from t = 0 (taken as a difference, exact where the two float32
//     losses' round-off would swamp it) and the sum of the rows' absolute changes (float64): a
//     line search along a direction whose logits are cached costs no GEMM.
//   Targets are checked to be classes of the model (one sync on a device) unless check_target is
//   False; a kernel that meets a bad target then gives NaN for its row, never reads outside it.
//   probe_solve(...) -> (coef, intercept, n_iter, grad_norm, gap, loss, history_s, history_y):
//     the whole solver loop (preconditioned L-BFGS with a Wolfe line search), see
//     probe_solver.cpp; the history pairs it returns (and takes) are in the eigenbasis of
//     eigvecs. products="convert" multiplies X converted to the compute dtype;
//     "split" multiplies float16 / bfloat16 X as stored, the float32 operand split in parts.
//     group_name: a torch.distributed group whose ranks each pass their own rows of X, target
//     and weight (and identical everything else); the row sums are all-reduced over it and every
//     rank returns the solution on all the rows.
#include "ops/probe.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "ops/checks.h"

namespace pyrobust {

std::tuple<at::Tensor, at::Tensor> probe_loss_grad(const at::Tensor& logits,
                                                   const at::Tensor& target,
                                                   const at::Tensor& weight, bool check_target) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::probe_loss_grad", "")
                       .typed<decltype(probe_loss_grad)>();
  return op.call(logits, target, weight, check_target);
}

at::Tensor probe_line_stats(const at::Tensor& logits, const at::Tensor& direction,
                            const at::Tensor& target, const at::Tensor& weight,
                            const at::Tensor& step, bool check_target) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::probe_line_stats", "")
                       .typed<decltype(probe_line_stats)>();
  return op.call(logits, direction, target, weight, step, check_target);
}

void check_probe_logits(const at::Tensor& logits, const at::Tensor& target,
                        const at::Tensor& weight) {
  TORCH_CHECK(logits.dim() == 3, "logits should be a 3-D (N, m, K) tensor, got ", logits.dim(),
              "-D");
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
              "logits should be float32 or float64, got ", logits.scalar_type());
  const int64_t n = logits.size(0);
  TORCH_CHECK_VALUE(logits.size(2) >= 1, "logits should have K >= 1 classes (the last dimension), got ",
                    "shape ", logits.sizes());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == n, "target should be a 1-D tensor of length ",
              n, ", got shape ", target.sizes());
  TORCH_CHECK(target.scalar_type() == at::kLong, "target should be int64, got ",
              target.scalar_type());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == n, "weight should be a 1-D tensor of length ",
              n, ", got shape ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == logits.scalar_type(), "weight should have the dtype of logits (",
              logits.scalar_type(), "), got ", weight.scalar_type());
  TORCH_CHECK(target.device() == logits.device() && weight.device() == logits.device(),
              "logits, target and weight should be on one device, got ", logits.device(), ", ",
              target.device(), ", ", weight.device());
}

void check_probe_targets(const at::Tensor& target, int64_t k) {
  if (target.numel() == 0) return;
  const auto [low, high] = value_range(target);
  const int64_t bound = k == 1 ? 2 : k;
  TORCH_CHECK_VALUE(low >= 0 && high < bound, "target should hold ",
                    k == 1 ? "0 or 1 (K = 1: the binomial model)" : "class indices in [0, K)",
                    " with K = ", k, ", got ", low < 0 ? low : high);
}

void check_probe_line_args(const at::Tensor& logits, const at::Tensor& direction,
                           const at::Tensor& target, const at::Tensor& weight,
                           const at::Tensor& step) {
  check_probe_logits(logits, target, weight);
  TORCH_CHECK(direction.sizes() == logits.sizes(), "direction should have the shape of logits ",
              logits.sizes(), ", got ", direction.sizes());
  TORCH_CHECK(direction.scalar_type() == logits.scalar_type() &&
                  direction.device() == logits.device(),
              "direction should match logits in dtype and device, got ", direction.scalar_type(),
              " on ", direction.device());
  TORCH_CHECK(step.dim() == 1 && step.size(0) == logits.size(1),
              "step should be a 1-D tensor of length m = ", logits.size(1), ", got shape ",
              step.sizes());
  TORCH_CHECK(step.scalar_type() == at::kDouble, "step should be float64, got ", step.scalar_type());
  TORCH_CHECK(step.device() == logits.device() || step.device().is_cpu(),
              "step should be on the logits' device (", logits.device(), ") or on the CPU, got ",
              step.device());
}

TORCH_LIBRARY_FRAGMENT(pyrobust, m) {
  m.def(
      "probe_loss_grad(Tensor logits, Tensor target, Tensor weight, *, bool check_target=True) "
      "-> (Tensor, Tensor)");
  m.def(
      "probe_line_stats(Tensor logits, Tensor direction, Tensor target, Tensor weight, "
      "Tensor step, *, bool check_target=True) -> Tensor");
  m.def(
      "probe_solve(Tensor X, Tensor target, Tensor weight, Tensor lambdas, Tensor coef, "
      "Tensor intercept, Tensor center, Tensor scale, Tensor eigvecs, Tensor eigvals, float tol, "
      "int max_iter, int history, int chunk_rows, Tensor? history_s=None, Tensor? history_y=None, "
      "float history_lambda=0., str products=\"convert\", str? group_name=None, "
      "float gap_rtol=0.) -> (Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace pyrobust
