// pyrobust::probe family: shared declarations (argument checks, solver entry point).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include <tuple>

#include "ops/hd.h"

namespace pyrobust {

// Number of per-C statistics returned by probe_loss_grad and probe_line_stats.
constexpr int64_t kLossGradStats = 2;   // sum w*loss, sum w*curvature
// probe_line_stats at t: sum w*loss, sum w*dloss/dt, sum w*d2loss/dt2, sum w*(loss - loss at
// t = 0) taken as a difference (exact where the losses' round-off is far above it), and
// sum |w*(loss - loss at t = 0)| (the scale of that change's round-off).
constexpr int64_t kLineStats = 5;
// A row whose logits move by at most this (max_j |t (d_j - d_y)|) gets the exact change.
constexpr double kExactStep = 1.0;

// Typed entries of the ops (through the dispatcher, so every backend and the autograd / tracing
// layers see the call), for C++ callers such as the solver.
std::tuple<at::Tensor, at::Tensor> probe_loss_grad(const at::Tensor& logits,
                                                   const at::Tensor& target,
                                                   const at::Tensor& weight,
                                                   bool check_target = true);
at::Tensor probe_line_stats(const at::Tensor& logits, const at::Tensor& direction,
                            const at::Tensor& target, const at::Tensor& weight,
                            const at::Tensor& step, bool check_target = true);

// probe_line_stats on the CPU (contiguous tensors, no target check) that also writes, at t =
// step, the logits z + t d into logits_out and their probe_loss_grad gradient into grad_out, and
// returns (the (m, kLineStats) line statistics, that gradient's (m, kLossGradStats) sums). The
// solver's line search ends on an evaluation at the step it takes, so the step's logits and
// gradient come from it instead of two more passes over the logits. Not an op: the solver's
// CPU path calls it directly.
std::tuple<at::Tensor, at::Tensor> probe_line_stats_step_cpu(
    const at::Tensor& logits, const at::Tensor& direction, const at::Tensor& target,
    const at::Tensor& weight, const at::Tensor& step, const at::Tensor& logits_out,
    const at::Tensor& grad_out);

// Shapes, dtypes and devices of (logits, target, weight); K >= 1. Checked before a kernel
// touches a device (a tensor on the wrong device is named, not met inside a device guard).
void check_probe_logits(const at::Tensor& logits, const at::Tensor& target,
                        const at::Tensor& weight);
// Every target a class of the model with `k` logits: in {0, 1} for k == 1 (binomial), in [0, k)
// otherwise. A host loop, or one sync for targets on a device: the public ops check each call
// (check_target=True); the solver checks once and calls them with check_target=False.
void check_probe_targets(const at::Tensor& target, int64_t k);
void check_probe_line_args(const at::Tensor& logits, const at::Tensor& direction,
                           const at::Tensor& target, const at::Tensor& weight,
                           const at::Tensor& step);

// A target the checks would refuse, met by a kernel called with check_target=False: the row
// contributes NaN (to its loss and gradient) instead of reading outside its logits.
PYROBUST_HD bool probe_target_ok(int64_t y, int64_t k) {
  return y >= 0 && y < (k == 1 ? 2 : k);
}

}  // namespace pyrobust
