// pyrobust::probe family: shared declarations (argument checks, solver entry point).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace pyrobust {

// Number of per-C statistics returned by probe_loss_grad and probe_line_stats.
constexpr int64_t kLossGradStats = 2;   // sum w*loss, sum w*curvature
constexpr int64_t kLineStats = 3;       // sum w*loss, sum w*dloss/dt, sum w*d2loss/dt2

void check_probe_logits(const at::Tensor& logits, const at::Tensor& target,
                        const at::Tensor& weight);
void check_probe_line_args(const at::Tensor& logits, const at::Tensor& direction,
                           const at::Tensor& target, const at::Tensor& weight,
                           const at::Tensor& step);

}  // namespace pyrobust
