// The row blends of the CPU mix kernel: one contiguous row of
//     o[k] = g a[k] + (1 - g) b[k],   g = base + gy * gx[k]
// (b null: the constant fill in place of b[k]). Written g a + (1 - g) b so that g = 1 and g = 0
// copy a value exactly (an unmixed sample, the outside of a hard CutMix box) whatever the dtype.
// uint8 results are saturated to [0, 255] and rounded half up, as on the GPU.
//
// Three paths (docs/kernels.md, "CPU rows"):
//   blend_row            portable loops for every dtype; float32 and uint8 also cloned for AVX2
//                        (PYROBUST_CLONES, simd.h).
//   blend_row_stream     float32 with non-temporal stores, for outputs far beyond the caches.
//   blend_row_u8_avx2    uint8 with AVX2 / FMA intrinsics (and a streaming variant), where
//                        u8_avx2_rows() says the CPU has them.
#pragma once

#include <algorithm>
#include <cstdint>

#include "ops/cpu/cpu_features.h"
#include "ops/mix.h"

// The uint8 intrinsics rows need GCC on x86-64. They use plain target attributes, not
// PYROBUST_CLONES' ifunc, so they also build under AddressSanitizer.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PYROBUST_U8_AVX2 1
#define PYROBUST_TARGET_AVX2_FMA __attribute__((target("avx2,fma")))
#else
#define PYROBUST_TARGET_AVX2_FMA
#endif

namespace pyrobust {

template <typename T, typename A>
inline T store(A v) {
  return static_cast<T>(v);
}
template <>
inline uint8_t store<uint8_t, float>(float v) {
  // Saturate to [0, 255], then round to nearest (ties up), as the CUDA kernel does. A blend of
  // two bytes with G in [0, 1] is in range already; a user's lam outside [0, 1] (constant mode)
  // is not. min / max and the float -> int32 -> byte conversion keep the loop vectorised.
  return static_cast<uint8_t>(static_cast<int32_t>(std::min(std::max(v, 0.0f), 255.0f) + 0.5f));
}

// The portable row, in the compute type A of T (mix.h).
template <typename T, typename A = typename Compute<T>::type>
__attribute__((always_inline)) inline void blend_row(const T* __restrict a, const T* __restrict b,
                                                     A fill, const float* __restrict gx, A base,
                                                     A gy, T* __restrict o, int64_t n) {
  if (b == nullptr) {
    for (int64_t k = 0; k < n; ++k) {
      const A g = base + gy * static_cast<A>(gx[k]);
      o[k] = store<T, A>(g * static_cast<A>(a[k]) + (A(1) - g) * fill);
    }
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    const A g = base + gy * static_cast<A>(gx[k]);
    o[k] = store<T, A>(g * static_cast<A>(a[k]) + (A(1) - g) * static_cast<A>(b[k]));
  }
}

// float32 and uint8, the data loader's dtypes: the portable row, defined with PYROBUST_CLONES
// (an AVX2 clone; at the baseline ISA the uint8 <-> float conversions of the uint8 row do not
// vectorise). Declared here without the attribute: on a declaration GCC would emit a resolver in
// every file that includes it, referring to clones that only the defining file has.
void blend_row(const float* __restrict a, const float* __restrict b, float fill,
               const float* __restrict gx, float base, float gy, float* __restrict o, int64_t n);
void blend_row(const uint8_t* __restrict a, const uint8_t* __restrict b, float fill,
               const float* __restrict gx, float base, float gy, uint8_t* __restrict o,
               int64_t n);

// Outputs of at least this many bytes are written with non-temporal stores (far beyond the
// caches, where writing around them saves the read-for-ownership of every output line).
constexpr int64_t kStreamBytes = 8 << 20;

// float32 with non-temporal stores; the same arithmetic as blend_row. Callers end each task's
// rows with stream_fence().
void blend_row_stream(const float* a, const float* b, float fill, const float* gx, float base,
                      float gy, float* o, int64_t n);
// Orders the task's streaming stores before the op returns.
void stream_fence();

// True where the blend_row_u8_avx2 rows may run: built for them and the CPU has AVX2 and FMA.
inline bool u8_avx2_rows() {
#if defined(PYROBUST_U8_AVX2)
  return cpu_has_avx2();
#else
  return false;
#endif
}

// uint8 with AVX2 and FMA, the blend one fused multiply-add rounded once:
//     o = trunc(clamp(g (a - b) + (b + 1/2), 1/2, 255 + 1/2))
// It is the portable row's round-half-up except where a value lies within one float ulp below
// a .5 boundary (one level apart; docs/kernels.md, "uint8 rounding"). g = 1 and g = 0 still give
// a and b exactly. Only where u8_avx2_rows().
PYROBUST_TARGET_AVX2_FMA void blend_row_u8_avx2(const uint8_t* a, const uint8_t* b, float fill,
                                                const float* gx, float base, float gy,
                                                uint8_t* o, int64_t n);
// The same with non-temporal stores (as blend_row_stream; end with stream_fence()).
PYROBUST_TARGET_AVX2_FMA void blend_row_u8_avx2_stream(const uint8_t* a, const uint8_t* b,
                                                       float fill, const float* gx, float base,
                                                       float gy, uint8_t* o, int64_t n);

}  // namespace pyrobust
