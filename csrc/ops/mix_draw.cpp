// pyrobust::mix_draw: every random decision of one mixing call, drawn on the host with a torch
// generator in one op call.
//
//   mix_draw(n, height, width, family, args, p, per_sample, pairing, mix_labels, generator)
//     -> (partner (N,) int64, params (N, 6) float32, active (N,) bool), on the CPU.
//
// The mixers call this once per batch. Drawing is a few dozen numbers, so its cost is the calls
// that make them: drawn in Python (a generator call per draw, numpy arithmetic, conversions) they
// cost a GPU mixer more host time than the GPU spends mixing the batch (docs/kernels.md).
//
// Families and their `args` (the layout of `params` is in mix_profiles.h):
//   circle [lo, hi, ellipse]  cx = u0 W, cy = u1 H, sx = s W, sy = s' H; s = lo + (hi - lo) u2,
//                             s' = s, or lo + (hi - lo) u3 for an ellipse        (gaussian)
//   square [lo, hi, smooth]   cx, cy as above, half-sides s W / 2, s H / 2, edges smooth W,
//                             smooth H                                            (trapezoid)
//   cutmix [alpha]            lam0 ~ Beta(alpha, alpha); cut sides floor(H sqrt(1 - lam0)) and
//                             floor(W sqrt(1 - lam0)); a box [cy - cut_h // 2, cy + cut_h // 2)
//                             by the same along x around the pixel (cy, cx) = (floor(u0 H),
//                             floor(u1 W)), clipped to the image: timm's rand_bbox, whose box
//                             loses a pixel per odd side                          (trapezoid, hard)
//   mixup  [alpha]            lam ~ Beta(alpha, alpha)                             (constant)
//   cutout [size, fraction]   cut sides floor(size H) and floor(size W) (a fraction) or size and
//                             size (pixels), boxed as CutMix's                     (trapezoid, hard)
// The stream, in order: the family's draws (Beta first, then a (draws, cols) block of float64
// uniforms), then one uniform per draw for `active` when p < 1, then the pairing's permutation.
// draws = N per sample, or 1 shared by the batch. Beta(a, a) is the first coordinate of a
// Dirichlet(a, a), torch's generator-aware sampler (a uniform for a = 1). An inactive sample
// pairs with itself (the kernels copy it exactly); without label mixing (Cutout, whose fill takes
// a partner's place) its box is also emptied.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/_sample_dirichlet.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/rand.h>
#include <ATen/ops/randperm.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "ops/mix.h"

namespace pyrobust {
namespace {

enum class Family { kCircle, kSquare, kCutMix, kMixUp, kCutout };

Family parse_family(const std::string& name, size_t n_args) {
  struct Entry {
    const char* name;
    Family family;
    size_t n_args;
  };
  static const Entry entries[] = {{"circle", Family::kCircle, 3},
                                  {"square", Family::kSquare, 3},
                                  {"cutmix", Family::kCutMix, 1},
                                  {"mixup", Family::kMixUp, 1},
                                  {"cutout", Family::kCutout, 2}};
  for (const auto& e : entries) {
    if (name == e.name) {
      TORCH_CHECK_VALUE(n_args == e.n_args, "family '", name, "' takes ", e.n_args,
                        " args, got ", n_args);
      return e.family;
    }
  }
  TORCH_CHECK_VALUE(false, "family should be 'circle', 'square', 'cutmix', 'mixup' or 'cutout', ",
                    "got '", name, "'");
}

// (draws,) float64 samples of Beta(alpha, alpha). Beta(1, 1), the mixers' default, is the
// uniform distribution: one uniform per draw instead of two gamma samples, the costlier draw.
at::Tensor beta(double alpha, int64_t draws, const std::optional<at::Generator>& gen) {
  TORCH_CHECK_VALUE(alpha > 0.0, "alpha should be > 0, got ", alpha);
  if (alpha == 1.0) return at::rand({draws}, gen, at::kDouble);
  const at::Tensor concentration = at::full({draws, 2}, alpha, at::kDouble);
  return at::_sample_dirichlet(concentration, gen).select(1, 0).contiguous();
}

// A hard box of sides cut_h x cut_w centred at the pixel (cy, cx), clipped to the image, as
// trapezoid parameters with zero edges.
void box(double cut_h, double cut_w, double cy, double cx, int64_t height, int64_t width,
         double* p) {
  const auto clip = [](double v, int64_t hi) { return std::clamp(v, 0.0, double(hi)); };
  const double y0 = clip(cy - std::floor(cut_h / 2), height);
  const double y1 = clip(cy + std::floor(cut_h / 2), height);
  const double x0 = clip(cx - std::floor(cut_w / 2), width);
  const double x1 = clip(cx + std::floor(cut_w / 2), width);
  p[0] = (x0 + x1) / 2;
  p[1] = (y0 + y1) / 2;
  p[2] = (x1 - x0) / 2;
  p[3] = (y1 - y0) / 2;
}

// (draws, kMixParams) float64 parameters of one family, row-major.
std::vector<double> draw_params(Family family, at::ArrayRef<double> args, int64_t draws,
                                int64_t height, int64_t width,
                                const std::optional<at::Generator>& gen) {
  std::vector<double> params(draws * kMixParams, 0.0);
  const double h = static_cast<double>(height), w = static_cast<double>(width);
  switch (family) {
    case Family::kCircle:
    case Family::kSquare: {
      const double lo = args[0], span = args[1] - args[0];
      const bool ellipse = family == Family::kCircle && args[2] != 0.0;
      const at::Tensor u = at::rand({draws, ellipse ? 4 : 3}, gen, at::kDouble);
      const double* up = u.data_ptr<double>();
      const int64_t cols = u.size(1);
      for (int64_t i = 0; i < draws; ++i) {
        const double* ui = up + i * cols;
        double* p = params.data() + i * kMixParams;
        const double s = lo + span * ui[2];
        p[0] = ui[0] * w;
        p[1] = ui[1] * h;
        if (family == Family::kCircle) {
          p[2] = s * w;
          p[3] = (ellipse ? lo + span * ui[3] : s) * h;
        } else {
          p[2] = s * w / 2;
          p[3] = s * h / 2;
          p[4] = args[2] * w;
          p[5] = args[2] * h;
        }
      }
      break;
    }
    case Family::kMixUp: {
      const at::Tensor lam = beta(args[0], draws, gen);
      for (int64_t i = 0; i < draws; ++i) params[i * kMixParams] = lam.data_ptr<double>()[i];
      break;
    }
    case Family::kCutMix:
    case Family::kCutout: {
      at::Tensor lam0;
      if (family == Family::kCutMix) lam0 = beta(args[0], draws, gen);
      const at::Tensor u = at::rand({draws, 2}, gen, at::kDouble);
      for (int64_t i = 0; i < draws; ++i) {
        double cut_h, cut_w;
        if (family == Family::kCutMix) {
          const double r = std::sqrt(1.0 - lam0.data_ptr<double>()[i]);
          cut_h = std::floor(h * r);
          cut_w = std::floor(w * r);
        } else if (args[1] != 0.0) {  // a fraction of each side
          cut_h = std::floor(args[0] * h);
          cut_w = std::floor(args[0] * w);
        } else {  // pixels
          cut_h = cut_w = args[0];
        }
        const double* ui = u.data_ptr<double>() + 2 * i;
        box(cut_h, cut_w, std::floor(ui[0] * h), std::floor(ui[1] * w), height, width,
            params.data() + i * kMixParams);
      }
      break;
    }
  }
  return params;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> draw_checked(
    int64_t n, int64_t height, int64_t width, std::string_view family_name,
    at::ArrayRef<double> args, double p, bool per_sample, std::string_view pairing_name,
    bool mix_labels, std::optional<at::Generator> generator) {
  TORCH_CHECK_VALUE(n >= 0 && height >= 0 && width >= 0,
                    "n, height and width should be >= 0, got ", n, ", ", height, ", ", width);
  // Mask coordinates are float32 (the params a kernel reads): beyond 2^24 pixels a side they
  // would no longer name a pixel.
  constexpr int64_t kMaxSide = int64_t(1) << 24;
  TORCH_CHECK_VALUE(height <= kMaxSide && width <= kMaxSide, "height and width should be <= ",
                    kMaxSide, " (float32 pixel coordinates), got ", height, " and ", width);
  TORCH_CHECK_VALUE(p >= 0.0 && p <= 1.0, "p should be a probability in [0, 1], got ", p);
  for (const double a : args)
    TORCH_CHECK_VALUE(std::isfinite(a), "args should be finite numbers, got ", a);

  const std::string pairing(pairing_name);
  TORCH_CHECK_VALUE(pairing == "permute" || pairing == "flip" || pairing == "roll",
                    "pairing should be 'permute', 'flip' or 'roll', got '", pairing, "'");
  const Family family = parse_family(std::string(family_name), args.size());
  const int64_t draws = per_sample ? n : 1;  // per batch: one draw shared by every sample
  const std::vector<double> drawn = draw_params(family, args, draws, height, width, generator);
  std::vector<char> drawn_active(draws, 1);
  if (p < 1.0) {
    const at::Tensor u = at::rand({draws}, generator, at::kDouble);
    for (int64_t i = 0; i < draws; ++i) drawn_active[i] = u.data_ptr<double>()[i] < p;
  }
  at::Tensor partner;
  if (pairing == "permute") {
    partner = at::randperm(n, generator, at::kLong);
  } else {
    partner = at::empty({n}, at::kLong);
    int64_t* pp = partner.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) pp[i] = pairing == "flip" ? n - 1 - i : (i + n - 1) % n;
  }
  at::Tensor params = at::empty({n, kMixParams}, at::kFloat);
  at::Tensor active = at::empty({n}, at::kBool);
  int64_t* pp = partner.data_ptr<int64_t>();
  float* q = params.data_ptr<float>();
  bool* a = active.data_ptr<bool>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t source = per_sample ? i : 0;
    a[i] = drawn_active[source] != 0;
    for (int64_t c = 0; c < kMixParams; ++c) {
      // Unmixed: paired with itself, or, with no partner (Cutout), an empty box.
      const bool empty = !a[i] && !mix_labels;
      q[i * kMixParams + c] = empty ? 0.f : static_cast<float>(drawn[source * kMixParams + c]);
    }
    if (!a[i]) pp[i] = i;
  }
  return {partner, params, active};
}

// The draws live in host memory first: a count beyond it is named, not a bare std::bad_alloc.
std::tuple<at::Tensor, at::Tensor, at::Tensor> mix_draw_kernel(
    int64_t n, int64_t height, int64_t width, std::string_view family,
    at::ArrayRef<double> args, double p, bool per_sample, std::string_view pairing,
    bool mix_labels, std::optional<at::Generator> generator) {
  try {
    return draw_checked(n, height, width, family, args, p, per_sample, pairing, mix_labels,
                        generator);
  } catch (const std::bad_alloc&) {
    const double bytes = static_cast<double>(n) * (kMixParams * (sizeof(double) + sizeof(float)) +
                                                   sizeof(int64_t) + 2);
    TORCH_CHECK(false, "n = ", n, " samples need about ", bytes / double(int64_t(1) << 30),
                " GiB of host memory for their draws, more than could be allocated");
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> mix_draw(
    int64_t n, int64_t height, int64_t width, std::string_view family, at::ArrayRef<double> args,
    double p, bool per_sample, std::string_view pairing, bool mix_labels,
    std::optional<at::Generator> generator) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_draw", "")
                       .typed<decltype(mix_draw)>();
  return op.call(n, height, width, family, args, p, per_sample, pairing, mix_labels, generator);
}

TORCH_LIBRARY_FRAGMENT(pyrobust, m) {
  m.def(
      "mix_draw(int n, int height, int width, str family, float[] args, float p, bool per_sample,"
      " str pairing, bool mix_labels, Generator? generator=None) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyrobust, CompositeExplicitAutograd, m) {
  m.impl("mix_draw", &mix_draw_kernel);
}

}  // namespace pyrobust
