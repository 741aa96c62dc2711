// Autograd of pyrobust::mix, in C++.
//
//   out[i] = G_i * images[i] + (1 - G_i) * images[partner[i]]     (or the constant fill)
//
// so d out[i] / d images[i] = G_i and d out[i] / d images[partner[i]] = 1 - G_i. Both are the
// mix op itself applied to the incoming gradient with a zero "other" (fill = 0), the second with
// the mask inverted, then added to the partners' rows. The backward calls the op through the
// dispatcher, so it is itself differentiable (double backward) and traceable (torch.compile).
//
// Why C++: registered from Python (torch.library.register_autograd), the same formula puts a
// Python layer in front of every call, even when nothing requires a gradient, which is the
// mixers' case in a data loader (docs/kernels.md). Here a call that needs no graph goes straight
// to the backend kernel.
#include <ATen/ops/index_add.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <string_view>

#include "ops/mix.h"

namespace pyrobust {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct MixFunction : public torch::autograd::Function<MixFunction> {
  // The backward uses only saved tensors and dispatcher ops: compiled autograd may trace it.
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& images,
                            const at::Tensor& partner, const at::Tensor& params,
                            std::string_view mode, bool invert, std::optional<double> fill) {
    ctx->save_for_backward({partner, params});
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["invert"] = invert;
    ctx->saved_data["fill"] = fill;
    at::AutoDispatchBelowADInplaceOrView guard;
    return mix(images, partner, params, mode, invert, fill);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& partner = saved[0];
    const at::Tensor& params = saved[1];
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    const bool invert = ctx->saved_data["invert"].toBool();
    const bool has_fill = !ctx->saved_data["fill"].isNone();
    const at::Tensor grad = grads[0].contiguous(grads[0].suggest_memory_format());
    at::Tensor grad_images = mix(grad, partner, params, mode, invert, 0.0);
    if (!has_fill) {
      const at::Tensor to_partner = mix(grad, partner, params, mode, !invert, 0.0);
      grad_images = at::index_add(grad_images, 0, partner.to(grad.device()), to_partner);
    }
    // One gradient per input of forward: images, then none for partner, params, mode, invert,
    // fill.
    return {grad_images, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor mix_autograd(const at::Tensor& images, const at::Tensor& partner,
                        const at::Tensor& params, std::string_view mode, bool invert,
                        std::optional<double> fill) {
  // params never get a gradient, but a params that requires one still makes the output part of
  // the graph (with none for params), as any op does.
  if (!(at::GradMode::is_enabled() && (images.requires_grad() || params.requires_grad()))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return mix(images, partner, params, mode, invert, fill);
  }
  return MixFunction::apply(images, partner, params, mode, invert, fill);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyrobust, Autograd, m) {
  m.impl("mix", &mix_autograd);
}

}  // namespace pyrobust
