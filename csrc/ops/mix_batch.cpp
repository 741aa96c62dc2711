// pyrobust::mix_batch: one whole mixing call in one op.
//
//   mix_batch(images, labels, family, args, p, per_sample, pairing, generator, mode, invert,
//             fill, num_classes, label_smoothing, mix_labels)
//     -> (images, targets, lam, partner, params)
//
// is mix_draw, then mix_targets, then mix, called from C++: the same results, bit for bit, as
// the three ops called one after the other with the same generator state. Each call of an op
// from Python costs ~6 us of argument handling before any work (measured on this CPU: an op
// doing nothing on one sample takes 7 us), and a GPU batch of 64 images moves its bytes in
// ~30 us, so the mixers make one call (mix_batch.out with a preallocated output).
// CompositeImplicitAutograd: autograd, devices and torch.compile come from the ops it calls.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace pyrobust {
namespace {

using Tensor = at::Tensor;

// mix_draw then mix_targets; returns (partner, params, targets, lam).
std::tuple<Tensor, Tensor, Tensor, Tensor> draw_and_target(
    const Tensor& images, const Tensor& labels, c10::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, c10::string_view pairing, std::optional<at::Generator> generator,
    c10::string_view mode, bool invert, int64_t num_classes, double label_smoothing,
    bool mix_labels) {
  static auto draw =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("pyrobust::mix_draw", "")
          .typed<std::tuple<Tensor, Tensor, Tensor>(int64_t, int64_t, int64_t, c10::string_view,
                                                    at::ArrayRef<double>, double, bool,
                                                    c10::string_view, bool,
                                                    std::optional<at::Generator>)>();
  static auto targets =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("pyrobust::mix_targets", "")
          .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                            const Tensor&, c10::string_view, bool, int64_t,
                                            double, bool)>();
  TORCH_CHECK(images.dim() == 4, "images should be a 4-D (N, C, H, W) tensor, got ", images.dim(),
              "-D");
  auto [partner, params, active] =
      draw.call(images.size(0), images.size(2), images.size(3), family, args, p, per_sample,
                pairing, mix_labels, generator);
  auto [soft, lam] = targets.call(images, labels, partner, params, mode, invert, num_classes,
                                  label_smoothing, mix_labels);
  return {partner, params, soft, lam};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> mix_batch(
    const Tensor& images, const Tensor& labels, c10::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, c10::string_view pairing, std::optional<at::Generator> generator,
    c10::string_view mode, bool invert, std::optional<double> fill, int64_t num_classes,
    double label_smoothing, bool mix_labels) {
  static auto mix =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("pyrobust::mix", "")
          .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, c10::string_view, bool,
                        std::optional<double>)>();
  auto [partner, params, soft, lam] =
      draw_and_target(images, labels, family, args, p, per_sample, pairing, generator, mode,
                      invert, num_classes, label_smoothing, mix_labels);
  Tensor mixed = mix.call(images, partner, params, mode, invert, fill);
  return {mixed, soft, lam, partner, params};
}

std::tuple<Tensor&, Tensor, Tensor, Tensor, Tensor> mix_batch_out(
    const Tensor& images, const Tensor& labels, c10::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, c10::string_view pairing, std::optional<at::Generator> generator,
    c10::string_view mode, bool invert, std::optional<double> fill, int64_t num_classes,
    double label_smoothing, bool mix_labels, Tensor& out) {
  static auto mix_out =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("pyrobust::mix", "out")
          .typed<Tensor&(const Tensor&, const Tensor&, const Tensor&, c10::string_view, bool,
                         std::optional<double>, Tensor&)>();
  auto [partner, params, soft, lam] =
      draw_and_target(images, labels, family, args, p, per_sample, pairing, generator, mode,
                      invert, num_classes, label_smoothing, mix_labels);
  mix_out.call(images, partner, params, mode, invert, fill, out);
  return {out, soft, lam, partner, params};
}

}  // namespace

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
  m.impl("mix_batch", &mix_batch);
  m.impl("mix_batch.out", &mix_batch_out);
}

}  // namespace pyrobust
