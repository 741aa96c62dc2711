// pyrobust::mix family: schemas and the argument checks every backend relies on.
//
//   mix(images, partner, params, mode, invert, fill)
//     out[i] = G_i * images[i] + (1 - G_i) * other_i,   other_i = images[partner[i]], or the
//     constant `fill` when given; G_i from `params[i]` (see mix_profiles.h), inverted when
//     `invert`. One pass over memory: G is computed per pixel from two 1-D profiles.
//   mix_mask(params, mode, invert, height, width) -> (N, H, W) float32 masks (tests, gallery).
//   mix_lambda(params, mode, invert, height, width) -> (N,) float32 mean of each mask, exact.
//   mix_targets(images, labels, partner, params, mode, invert, num_classes, label_smoothing,
//               mix_labels) -> (targets, lam), both on the images' device:
//     lam[i] = mean(G_i) (1 for an unmixed sample: paired with itself, or labels not mixed),
//     targets[i] = s / K + (1 - s) * (lam[i] * onehot(labels[i]) + (1 - lam[i]) *
//     onehot(labels[partner[i]])), float32 (N, K); the partner's term only for a mixed sample.
//     `images` gives the batch's size and device: the targets of a mix are made where it is.
//   mix_gather.out(samples, partner, params, mode, invert, fill, *, out): mix.out of the batch
//     that stacking `samples` (N tensors (C, H, W)) would make, read from where each sample lies:
//     the stacking pass that a collate would make first is saved (DataLoader workers).
//   mix_pairs_(images, params, modes, invert) -> (): images mixed in place, pair by pair: for
//     i < N / 2 and j = N - 1 - i, from the originals of both,
//       images[i] = G_i images[i] + (1 - G_i) images[j],  images[j] = G_j images[j] + (1 - G_j) images[i],
//     G_k from params[k] in the profile modes[k] (0 gaussian, 1 trapezoid, 2 constant), inverted
//     where invert[k]. A sample with modes[k] = -1 is left as it is, as is the middle sample of an
//     odd batch, and a row whose mask is 1 throughout by its inverted y-profile (outside a box):
//     the same values for finite images, not rewritten. Each pair is read once and written once: two passes over memory, where mix.out
//     into a scratch and a copy back take three (timm's in-place, flipped-batch mixing). It
//     returns nothing, so that torch.compile can functionalize it (a custom op may not return
//     an alias of its input).
#include "ops/mix.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>

#include <torch/library.h>

#include <string>
#include <string_view>

#include "ops/cpu/huge_pages.h"

namespace pyrobust {

MaskMode check_mix_params(const at::Tensor& params, const std::string& mode, int64_t n) {
  TORCH_CHECK(params.dim() == 2 && params.size(1) == kMixParams,
              "params should be a (N, ", kMixParams, ") tensor, got shape ", params.sizes());
  TORCH_CHECK(params.scalar_type() == at::kFloat, "params should be float32, got ",
              params.scalar_type());
  TORCH_CHECK(params.size(0) == n, "params should have one row per image (", n, "), got ",
              params.size(0));
  if (mode == "gaussian") return MaskMode::kGaussian;
  if (mode == "trapezoid") return MaskMode::kTrapezoid;
  if (mode == "constant") return MaskMode::kConstant;
  TORCH_CHECK_VALUE(false, "mode should be 'gaussian', 'trapezoid' or 'constant', got '", mode,
                    "'");
}

namespace {

// A 4-D batch of a dtype the blends support.
void check_mix_images(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4, "images should be a 4-D (N, C, H, W) tensor, got ", images.dim(),
              "-D");
  const auto dtype = images.scalar_type();
  TORCH_CHECK(dtype == at::kByte || dtype == at::kHalf || dtype == at::kBFloat16 ||
                  dtype == at::kFloat || dtype == at::kDouble,
              "images should be uint8, float16, bfloat16, float32 or float64, got ", dtype);
}

}  // namespace

MaskMode check_mix_args(const at::Tensor& images, const at::Tensor& partner,
                        const at::Tensor& params, const std::string& mode) {
  check_mix_images(images);
  const int64_t n = images.size(0);
  TORCH_CHECK(partner.dim() == 1 && partner.size(0) == n,
              "partner should be a 1-D tensor of length ", n, ", got shape ", partner.sizes());
  TORCH_CHECK(partner.scalar_type() == at::kLong, "partner should be int64, got ",
              partner.scalar_type());
  // Parameters drawn on the host (as the mixers draw them) may stay there: a CUDA kernel copies
  // them with its launch, after checking the partner indices on the host, at no sync.
  const auto usable = [&](const at::Tensor& t) {
    return t.device() == images.device() || t.device().is_cpu();
  };
  TORCH_CHECK(usable(partner) && usable(params),
              "partner and params should be on the images' device (", images.device(),
              ") or on the CPU, got ", partner.device(), " and ", params.device());
  return check_mix_params(params, mode, n);
}

void check_partner_range(const at::Tensor& partner, int64_t n) {
  const auto p = partner.contiguous();
  const int64_t* pp = p.data_ptr<int64_t>();
  for (int64_t i = 0; i < p.numel(); ++i) {
    TORCH_CHECK(pp[i] >= 0 && pp[i] < n, "partner[", i, "] should be in [0, ", n, "), got ",
                pp[i]);
  }
}

void check_mix_out(const at::Tensor& images, const at::Tensor& out, const Layout& lay) {
  TORCH_CHECK(out.sizes() == images.sizes(), "out should have the images' shape ",
              images.sizes(), ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == images.scalar_type(), "out should have dtype ",
              images.scalar_type(), ", got ", out.scalar_type());
  TORCH_CHECK(out.device() == images.device(), "out should be on ", images.device(), ", got ",
              out.device());
  const auto format =
      lay.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  TORCH_CHECK(out.is_contiguous(format), "out should be contiguous in the images' memory format (",
              lay.channels_last ? "channels_last" : "contiguous", ")");
  const auto overlap = images.numel() == 0 ? at::MemOverlapStatus::No
                                           : at::get_overlap_status(out, images);
  TORCH_CHECK(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial,
              "out must not alias images (not even in part): out[i] reads images[partner[i]]");
}

MaskMode check_mix_gather_args(at::TensorList samples, const at::Tensor& partner,
                               const at::Tensor& params, const std::string& mode,
                               const at::Tensor& out) {
  const MaskMode parsed = check_mix_args(out, partner, params, mode);
  TORCH_CHECK(out.is_contiguous() || out.is_contiguous(at::MemoryFormat::ChannelsLast),
              "out should be contiguous or channels_last, got strides ", out.strides());
  TORCH_CHECK(static_cast<int64_t>(samples.size()) == out.size(0), "samples should hold ",
              out.size(0), " tensors, one per row of out, got ", samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const at::Tensor& s = samples[i];
    TORCH_CHECK(s.dim() == 3 && s.sizes() == out.sizes().slice(1), "samples[", i,
                "] should have shape ", out.sizes().slice(1), ", got ", s.sizes());
    TORCH_CHECK(s.scalar_type() == out.scalar_type() && s.device() == out.device(), "samples[",
                i, "] should be ", out.scalar_type(), " on ", out.device(), ", got ",
                s.scalar_type(), " on ", s.device());
    const auto overlap =
        s.numel() == 0 ? at::MemOverlapStatus::No : at::get_overlap_status(out, s);
    TORCH_CHECK(overlap != at::MemOverlapStatus::Full && overlap != at::MemOverlapStatus::Partial,
                "out must not alias samples[", i, "]");
  }
  return parsed;
}

Layout check_mix_pairs_args(const at::Tensor& images, const at::Tensor& params,
                            const at::Tensor& modes, const at::Tensor& invert) {
  check_mix_images(images);
  // Mixed in place: no contiguous copy to fall back on.
  TORCH_CHECK(images.is_contiguous() || images.is_contiguous(at::MemoryFormat::ChannelsLast),
              "images should be contiguous or channels_last (they are mixed in place), got strides ",
              images.strides());
  const int64_t n = images.size(0);
  check_mix_params(params, "constant", n);
  TORCH_CHECK(modes.dim() == 1 && modes.size(0) == n, "modes should be a 1-D tensor of length ",
              n, ", got shape ", modes.sizes());
  TORCH_CHECK(modes.scalar_type() == at::kLong, "modes should be int64, got ",
              modes.scalar_type());
  TORCH_CHECK(invert.dim() == 1 && invert.size(0) == n, "invert should be a 1-D tensor of length ",
              n, ", got shape ", invert.sizes());
  TORCH_CHECK(invert.scalar_type() == at::kBool, "invert should be bool, got ",
              invert.scalar_type());
  // The per-sample decisions are the host's: they are checked there and travel with the launch.
  TORCH_CHECK(params.device() == images.device() || params.is_cpu(),
              "params should be on the images' device (", images.device(), ") or on the CPU, got ",
              params.device());
  TORCH_CHECK(modes.is_cpu() && invert.is_cpu(), "modes and invert should be on the CPU, got ",
              modes.device(), " and ", invert.device());
  const auto m = modes.contiguous();
  const int64_t* mp = m.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(mp[i] >= -1 && mp[i] <= 2,
                      "modes[", i, "] should be -1 (left as is), 0 (gaussian), 1 (trapezoid) or 2 "
                      "(constant), got ", mp[i]);
  }
  return layout_of(images);
}

MaskMode check_targets_args(const at::Tensor& images, const at::Tensor& labels,
                            const at::Tensor& partner, const at::Tensor& params,
                            const std::string& mode, int64_t num_classes,
                            double label_smoothing) {
  const MaskMode parsed = check_mix_args(images, partner, params, mode);
  const int64_t n = images.size(0);
  TORCH_CHECK_VALUE(num_classes >= 1, "num_classes should be >= 1, got ", num_classes);
  TORCH_CHECK_VALUE(label_smoothing >= 0.0 && label_smoothing < 1.0,
                    "label_smoothing should be in [0, 1), got ", label_smoothing);
  TORCH_CHECK_VALUE(labels.dim() == 1 && labels.size(0) == n, "labels should be 1-D of length N=",
                    n, ", got shape ", labels.sizes());
  TORCH_CHECK_TYPE(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false),
                   "labels should be an integer tensor of class ids, got ",
                   labels.scalar_type());
  TORCH_CHECK(labels.device() == images.device() || labels.device().is_cpu(),
              "labels should be on the images' device (", images.device(),
              ") or on the CPU, got ", labels.device());
  check_label_range(labels, num_classes);
  return parsed;
}

void check_label_range(const at::Tensor& labels, int64_t num_classes) {
  check_index_range(labels, num_classes, "labels");
}

MaskMode check_mask_args(const at::Tensor& params, const std::string& mode, int64_t height,
                         int64_t width, bool for_lambda) {
  if (for_lambda) {
    TORCH_CHECK(height > 0 && width > 0, "height and width should be > 0, got ", height, " and ",
                width);
  } else {
    TORCH_CHECK(height >= 0 && width >= 0, "height and width should be >= 0, got ", height,
                " and ", width);
  }
  return check_mix_params(params, mode, params.dim() > 0 ? params.size(0) : 0);
}

at::Tensor mix(const at::Tensor& images, const at::Tensor& partner, const at::Tensor& params,
               std::string_view mode, bool invert, std::optional<double> fill) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix", "")
                       .typed<decltype(mix)>();
  return op.call(images, partner, params, mode, invert, fill);
}

at::Tensor& mix_out(const at::Tensor& images, const at::Tensor& partner, const at::Tensor& params,
                    std::string_view mode, bool invert, std::optional<double> fill,
                    at::Tensor& out) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix", "out")
                       .typed<decltype(mix_out)>();
  return op.call(images, partner, params, mode, invert, fill, out);
}

at::Tensor mix_mask(const at::Tensor& params, std::string_view mode, bool invert, int64_t height,
                    int64_t width) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_mask", "")
                       .typed<decltype(mix_mask)>();
  return op.call(params, mode, invert, height, width);
}

at::Tensor mix_lambda(const at::Tensor& params, std::string_view mode, bool invert,
                      int64_t height, int64_t width) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_lambda", "")
                       .typed<decltype(mix_lambda)>();
  return op.call(params, mode, invert, height, width);
}

std::tuple<at::Tensor, at::Tensor> mix_targets(const at::Tensor& images, const at::Tensor& labels,
                                               const at::Tensor& partner,
                                               const at::Tensor& params, std::string_view mode,
                                               bool invert, int64_t num_classes,
                                               double label_smoothing, bool mix_labels) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_targets", "")
                       .typed<decltype(mix_targets)>();
  return op.call(images, labels, partner, params, mode, invert, num_classes, label_smoothing,
                 mix_labels);
}

void mix_pairs_(const at::Tensor& images, const at::Tensor& params, const at::Tensor& modes,
                const at::Tensor& invert) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_pairs_", "")
                       .typed<decltype(mix_pairs_)>();
  op.call(images, params, modes, invert);
}

namespace {

// pyrobust::mix for every backend: allocate the output in the images' memory format and call
// mix.out, which each backend implements.
at::Tensor mix_alloc(const at::Tensor& images, const at::Tensor& partner, const at::Tensor& params,
                     std::string_view mode, bool invert, std::optional<double> fill) {
  TORCH_CHECK(images.dim() == 4, "images should be a 4-D (N, C, H, W) tensor, got ", images.dim(),
              "-D");
  at::Tensor out = at::empty(images.sizes(), images.options().memory_format(
                                                 images.suggest_memory_format()));
  advise_huge_pages(out);
  return mix_out(images, partner, params, mode, invert, fill, out);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyrobust, m) {
  m.def(
      "mix(Tensor images, Tensor partner, Tensor params, str mode, bool invert, float? fill)"
      " -> Tensor");
  m.def(
      "mix.out(Tensor images, Tensor partner, Tensor params, str mode, bool invert, float? fill,"
      " *, Tensor(a!) out) -> Tensor(a!)");
  m.def("mix_mask(Tensor params, str mode, bool invert, int height, int width) -> Tensor");
  m.def("mix_lambda(Tensor params, str mode, bool invert, int height, int width) -> Tensor");
  m.def(
      "mix_targets(Tensor images, Tensor labels, Tensor partner, Tensor params, str mode,"
      " bool invert, int num_classes, float label_smoothing, bool mix_labels)"
      " -> (Tensor, Tensor)");
  m.def(
      "mix_gather.out(Tensor[] samples, Tensor partner, Tensor params, str mode, bool invert,"
      " float? fill, *, Tensor(a!) out) -> Tensor(a!)");
  m.def("mix_pairs_(Tensor(a!) images, Tensor params, Tensor modes, Tensor invert) -> ()");
}

TORCH_LIBRARY_IMPL(pyrobust, CompositeExplicitAutograd, m) {
  m.impl("mix", &mix_alloc);
}

// The targets depend on the images' size, never on their values: not differentiable, whatever
// the images require.
TORCH_LIBRARY_IMPL(pyrobust, Autograd, m) {
  m.impl("mix_targets", torch::CppFunction::makeFallthrough());
}

}  // namespace pyrobust
