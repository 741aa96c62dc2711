// Separable mixing masks: the 1-D profiles shared by the CPU and CUDA kernels.
//
// Every mask pyrobust mixes with is G(y, x) = base + sign * gy(y) * gx(x), with base = 0,
// sign = 1, or, for an inverted mask, base = 1, sign = -1. Pixel (h, w) sits at continuous
// coordinates (w + 0.5, h + 0.5). Per sample, `params` holds six floats:
//   gaussian  : cx, cy, sx, sy, -, -   g(u) = exp(-(u - c)^2 / (2 s^2))          (SmoothMix circle)
//   trapezoid : cx, cy, hx, hy, ex, ey g(u) = clamp((h + e - |u - c|) / e, 0, 1) for e > 0,
//                                      and [|u - c| < h] for e = 0              (SmoothMix square,
//                                                                                CutMix/Cutout box)
//   constant  : lam, -, -, -, -, -     gy = 1, gx = lam                         (MixUp)
// Because G is separable, mean(G) = base + sign * (sum gy)(sum gx) / (H W) exactly.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/hd.h"

namespace pyrobust {

enum class MaskMode : int64_t { kGaussian = 0, kTrapezoid = 1, kConstant = 2 };

constexpr int64_t kMixParams = 6;

// Value of the 1-D profile along one axis; `axis` 0 is x (width), 1 is y (height). Computed in
// double and rounded once: in float, (h + e - |u - c|) / e loses about (W / e) ulps to
// cancellation, which the float64 blends would show.
PYROBUST_HD float mask_profile(MaskMode mode, const float* p, int axis, int64_t index) {
  const double u = static_cast<double>(index) + 0.5;
  switch (mode) {
    case MaskMode::kGaussian: {
      const double d = u - p[axis];
      const double s = p[2 + axis];
      return static_cast<float>(exp(-(d * d) / (2.0 * s * s)));
    }
    case MaskMode::kTrapezoid: {
      const double d = fabs(u - p[axis]);
      const double h = p[2 + axis];
      const double e = p[4 + axis];
      if (e > 0.0) {
        return static_cast<float>(fmin(fmax((h + e - d) / e, 0.0), 1.0));
      }
      return d < h ? 1.f : 0.f;
    }
    case MaskMode::kConstant:
    default:
      return axis == 0 ? p[0] : 1.f;
  }
}

}  // namespace pyrobust
