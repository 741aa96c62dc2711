// pyrobust::mix_batch: one whole mixing call in one op.
//
//   mix_batch(images, labels, family, args, p, per_sample, pairing, generator, mode, invert,
//             fill, num_classes, label_smoothing, mix_labels)
//     -> (images, targets, lam, partner, params)
//
// is mix_draw, then mix_targets, then mix, called from C++: the same results, bit for bit, as
// the three ops called one after the other with the same generator state. An op called from
// Python pays a fixed cost in argument handling before any work, of the order of a GPU's whole
// pass over a batch, so the mixers make one call (mix_batch.out with a preallocated output);
// see docs/kernels.md. CompositeImplicitAutograd: autograd, devices and torch.compile come from
// the ops it calls.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "ops/mix.h"

namespace pyrobust {
namespace {

using Tensor = at::Tensor;

// mix_draw then mix_targets; returns (partner, params, targets, lam).
std::tuple<Tensor, Tensor, Tensor, Tensor> draw_and_target(
    const Tensor& images, const Tensor& labels, std::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, std::string_view pairing, std::optional<at::Generator> generator,
    std::string_view mode, bool invert, int64_t num_classes, double label_smoothing,
    bool mix_labels) {
  TORCH_CHECK(images.dim() == 4, "images should be a 4-D (N, C, H, W) tensor, got ", images.dim(),
              "-D");
  auto [partner, params, active] =
      mix_draw(images.size(0), images.size(2), images.size(3), family, args, p, per_sample,
               pairing, mix_labels, generator);
  auto [soft, lam] = mix_targets(images, labels, partner, params, mode, invert, num_classes,
                                 label_smoothing, mix_labels);
  return {partner, params, soft, lam};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mix_batch_composite(
    const Tensor& images, const Tensor& labels, std::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, std::string_view pairing, std::optional<at::Generator> generator,
    std::string_view mode, bool invert, std::optional<double> fill, int64_t num_classes,
    double label_smoothing, bool mix_labels) {
  auto [partner, params, soft, lam] =
      draw_and_target(images, labels, family, args, p, per_sample, pairing, generator, mode,
                      invert, num_classes, label_smoothing, mix_labels);
  Tensor mixed = mix(images, partner, params, mode, invert, fill);
  return {mixed, soft, lam, partner, params};
}

std::tuple<Tensor&, Tensor, Tensor, Tensor, Tensor> mix_batch_out_composite(
    const Tensor& images, const Tensor& labels, std::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, std::string_view pairing, std::optional<at::Generator> generator,
    std::string_view mode, bool invert, std::optional<double> fill, int64_t num_classes,
    double label_smoothing, bool mix_labels, Tensor& out) {
  auto [partner, params, soft, lam] =
      draw_and_target(images, labels, family, args, p, per_sample, pairing, generator, mode,
                      invert, num_classes, label_smoothing, mix_labels);
  mix_out(images, partner, params, mode, invert, fill, out);
  return {out, soft, lam, partner, params};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mix_batch(
    const Tensor& images, const Tensor& labels, std::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, std::string_view pairing, std::optional<at::Generator> generator,
    std::string_view mode, bool invert, std::optional<double> fill, int64_t num_classes,
    double label_smoothing, bool mix_labels) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_batch", "")
                       .typed<decltype(mix_batch)>();
  return op.call(images, labels, family, args, p, per_sample, pairing, generator, mode, invert,
                 fill, num_classes, label_smoothing, mix_labels);
}

TORCH_LIBRARY_FRAGMENT(pyrobust, m) {
  m.def(
      "mix_batch(Tensor images, Tensor labels, str family, float[] args, float p, bool per_sample,"
      " str pairing, Generator? generator, str mode, bool invert, float? fill, int num_classes,"
      " float label_smoothing, bool mix_labels) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "mix_batch.out(Tensor images, Tensor labels, str family, float[] args, float p,"
      " bool per_sample, str pairing, Generator? generator, str mode, bool invert, float? fill,"
      " int num_classes, float label_smoothing, bool mix_labels, *, Tensor(a!) out)"
      " -> (Tensor(a!), Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyrobust, CompositeImplicitAutograd, m) {
  m.impl("mix_batch", &mix_batch_composite);
  m.impl("mix_batch.out", &mix_batch_out_composite);
}

}  // namespace pyrobust
