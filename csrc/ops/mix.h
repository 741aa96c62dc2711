// pyrobust::mix family: the typed C++ entry of every op, and what the kernels of every backend
// share (compute type, row layout, argument checks).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "ops/checks.h"
#include "ops/mix_profiles.h"

namespace pyrobust {

// Typed entries of the ops, one per schema (defined beside the schema: mix.cpp, mix_draw.cpp,
// mix_batch.cpp). They call through the dispatcher, so every backend and the autograd and
// tracing layers see the call: the front door for C++ callers (other ops, the C++ tests).
// mix_batch.out has none: its mixed (Tensor&, Tensor, ...) return cannot be boxed by a typed
// call, and no C++ caller needs it.
at::Tensor mix(const at::Tensor& images, const at::Tensor& partner, const at::Tensor& params,
               std::string_view mode, bool invert, std::optional<double> fill);
at::Tensor& mix_out(const at::Tensor& images, const at::Tensor& partner, const at::Tensor& params,
                    std::string_view mode, bool invert, std::optional<double> fill,
                    at::Tensor& out);
at::Tensor mix_mask(const at::Tensor& params, std::string_view mode, bool invert, int64_t height,
                    int64_t width);
at::Tensor mix_lambda(const at::Tensor& params, std::string_view mode, bool invert,
                      int64_t height, int64_t width);
std::tuple<at::Tensor, at::Tensor> mix_targets(const at::Tensor& images, const at::Tensor& labels,
                                               const at::Tensor& partner,
                                               const at::Tensor& params, std::string_view mode,
                                               bool invert, int64_t num_classes,
                                               double label_smoothing, bool mix_labels);
void mix_pairs_(const at::Tensor& images, const at::Tensor& params, const at::Tensor& modes,
                const at::Tensor& invert);
std::tuple<at::Tensor, at::Tensor, at::Tensor> mix_draw(
    int64_t n, int64_t height, int64_t width, std::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, std::string_view pairing, bool mix_labels,
    std::optional<at::Generator> generator = std::nullopt);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mix_batch(
    const at::Tensor& images, const at::Tensor& labels, std::string_view family,
    at::ArrayRef<double> args, double p, bool per_sample, std::string_view pairing,
    std::optional<at::Generator> generator, std::string_view mode, bool invert,
    std::optional<double> fill, int64_t num_classes, double label_smoothing, bool mix_labels);

// Blends are computed in float for every image dtype but double.
template <typename T>
struct Compute {
  using type = float;
};
template <>
struct Compute<double> {
  using type = double;
};

// How a batch is walked: rows of contiguous values, each row one (sample, channel, y) for
// NCHW or one (sample, y) for channels-last (then a row holds W * C values).
struct Layout {
  bool channels_last;
  int64_t n, c, h, w;
  int64_t rows() const { return channels_last ? h : c * h; }   // rows per sample
  int64_t inner() const { return channels_last ? w * c : w; }  // contiguous values per row
};

inline Layout layout_of(const at::Tensor& images) {
  const bool cl = !images.is_contiguous() &&
                  images.is_contiguous(at::MemoryFormat::ChannelsLast);
  return {cl, images.size(0), images.size(1), images.size(2), images.size(3)};
}

// Validates the arguments of pyrobust::mix / mix_mask and returns the parsed mode.
MaskMode check_mix_params(const at::Tensor& params, const std::string& mode, int64_t n);
// Validates a preallocated output: the images' shape, dtype, device and memory format, no alias.
void check_mix_out(const at::Tensor& images, const at::Tensor& out, const Layout& lay);
// Validates the arguments of pyrobust::mix / mix.out and returns the parsed mode. partner and
// params may be on the images' device or on the CPU.
MaskMode check_mix_args(const at::Tensor& images, const at::Tensor& partner,
                        const at::Tensor& params, const std::string& mode);
// Validates the arguments of pyrobust::mix_gather.out (those of mix.out for `out` as the images;
// out contiguous or channels_last; one sample per row of out, each (C, H, W) of out's dtype and
// device, none aliasing out) and returns the parsed mode.
MaskMode check_mix_gather_args(at::TensorList samples, const at::Tensor& partner,
                               const at::Tensor& params, const std::string& mode,
                               const at::Tensor& out);
// Validates the arguments of pyrobust::mix_pairs_ (images contiguous or channels_last, as they
// are mixed in place; params (N, 6) float32 on the images' device or the CPU; modes (N,) int64 in
// [-1, 2] and invert (N,) bool, both on the CPU) and returns the images' layout.
Layout check_mix_pairs_args(const at::Tensor& images, const at::Tensor& params,
                            const at::Tensor& modes, const at::Tensor& invert);
// Validates the arguments of pyrobust::mix_targets (those of mix, then labels: 1-D, integer, N
// long, on the images' device or the CPU, in [0, num_classes); num_classes >= 1;
// label_smoothing in [0, 1)).
MaskMode check_targets_args(const at::Tensor& images, const at::Tensor& labels,
                            const at::Tensor& partner, const at::Tensor& params,
                            const std::string& mode, int64_t num_classes,
                            double label_smoothing);
// Every label in [0, num_classes) (a ValueError naming the first bound crossed). Host labels are
// checked in a loop; labels on a device cost one sync.
void check_label_range(const at::Tensor& labels, int64_t num_classes);
// Every partner index in [0, n); `partner` is a CPU int64 tensor.
void check_partner_range(const at::Tensor& partner, int64_t n);
// Validates the arguments of pyrobust::mix_mask (sizes >= 0) or mix_lambda (sizes > 0: the mean
// of an empty mask is undefined) and returns the parsed mode.
MaskMode check_mask_args(const at::Tensor& params, const std::string& mode, int64_t height,
                         int64_t width, bool for_lambda);

// The float32 weights of a targets row: the smoothing floor s / K on every class and the share
// 1 - s that the sample's own and partner's labels split as lam : 1 - lam.
struct TargetWeights {
  float floor, keep;
};
inline TargetWeights target_weights(double label_smoothing, int64_t num_classes) {
  return {static_cast<float>(label_smoothing / static_cast<double>(num_classes)),
          static_cast<float>(1.0 - label_smoothing)};
}

// A fill is a finite number: NaN or inf would blend into every pixel it touches (and has no
// uint8 value at all).
inline void check_mix_fill(const std::optional<double>& fill) {
  TORCH_CHECK_VALUE(!fill.has_value() || std::isfinite(*fill), "fill should be finite, got ",
                    fill.value_or(0.0));
}

// A fill value outside the dtype's range is saturated first (uint8: to [0, 255]), so that the
// blend of two in-range values never leaves the range.
inline double saturated_fill(double fill, at::ScalarType dtype) {
  if (dtype == at::kByte) return fill < 0.0 ? 0.0 : (fill > 255.0 ? 255.0 : fill);
  return fill;
}

}  // namespace pyrobust
