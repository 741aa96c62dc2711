// The row blends of the CPU mix kernel (see blend_rows.h).
#include "ops/cpu/blend_rows.h"

#include <cstdint>

#include "ops/cpu/simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyrobust {

PYROBUST_CLONES void blend_row(const float* __restrict a, const float* __restrict b, float fill,
                               const float* __restrict gx, float base, float gy,
                               float* __restrict o, int64_t n) {
  blend_row<float, float>(a, b, fill, gx, base, gy, o, n);
}

PYROBUST_CLONES void blend_row(const uint8_t* __restrict a, const uint8_t* __restrict b,
                               float fill, const float* __restrict gx, float base, float gy,
                               uint8_t* __restrict o, int64_t n) {
  blend_row<uint8_t, float>(a, b, fill, gx, base, gy, o, n);
}

#if defined(__x86_64__)
// SSE2 is the x86-64 baseline, so this needs no clone: 4-wide arithmetic is enough for a pass
// that memory bounds. The unaligned head and the tail go through blend_row<float, float>, the
// same arithmetic.
void blend_row_stream(const float* a, const float* b, float fill, const float* gx, float base,
                      float gy, float* o, int64_t n) {
  int64_t k = 0;
  while (k < n && (reinterpret_cast<uintptr_t>(o + k) & 15) != 0) ++k;
  blend_row<float, float>(a, b, fill, gx, base, gy, o, k);
  const __m128 vbase = _mm_set1_ps(base), vgy = _mm_set1_ps(gy), vone = _mm_set1_ps(1.f);
  const __m128 vfill = _mm_set1_ps(fill);
  for (; k + 4 <= n; k += 4) {
    const __m128 g = _mm_add_ps(vbase, _mm_mul_ps(vgy, _mm_loadu_ps(gx + k)));
    const __m128 vb = b != nullptr ? _mm_loadu_ps(b + k) : vfill;
    const __m128 r = _mm_add_ps(_mm_mul_ps(g, _mm_loadu_ps(a + k)),
                                _mm_mul_ps(_mm_sub_ps(vone, g), vb));
    _mm_stream_ps(o + k, r);
  }
  blend_row<float, float>(a + k, b != nullptr ? b + k : nullptr, fill, gx + k, base, gy, o + k,
                          n - k);
}
void stream_fence() { _mm_sfence(); }
#else
// No streaming stores elsewhere: the cached path.
void blend_row_stream(const float* a, const float* b, float fill, const float* gx, float base,
                      float gy, float* o, int64_t n) {
  blend_row(a, b, fill, gx, base, gy, o, n);
}
void stream_fence() {}
#endif

#if defined(PYROBUST_U8_AVX2)
namespace {

// 8 bytes widened to 8 floats: one vpmovzxbd and one conversion.
__attribute__((target("avx2,fma"), always_inline)) inline __m256 widen(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// The same arithmetic one value at a time, for a row's unaligned head and its tail.
PYROBUST_TARGET_AVX2_FMA void blend_u8_fma(const uint8_t* a, const uint8_t* b, float fill,
                                           const float* gx, float base, float gy, uint8_t* o,
                                           int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const float g = __builtin_fmaf(gy, gx[k], base);
    const float bv = b != nullptr ? static_cast<float>(b[k]) : fill;
    const float r = __builtin_fmaf(g, static_cast<float>(a[k]) - bv, bv + 0.5f);
    o[k] = static_cast<uint8_t>(static_cast<int32_t>(std::min(std::max(r, 0.5f), 255.5f)));
  }
}

// 32 values a step: four groups of 8 widened, blended with one FMA each, narrowed with two packs
// and a permute. a - b and b + 1/2 are exact in float for bytes.
template <bool Stream>
__attribute__((target("avx2,fma"), always_inline)) inline void blend_u8_avx2(
    const uint8_t* a, const uint8_t* b, float fill, const float* gx, float base, float gy,
    uint8_t* o, int64_t n) {
  int64_t k = 0;
  if (Stream) {
    while (k < n && (reinterpret_cast<uintptr_t>(o + k) & 31) != 0) ++k;
    blend_u8_fma(a, b, fill, gx, base, gy, o, k);
  }
  const __m256 vbase = _mm256_set1_ps(base), vgy = _mm256_set1_ps(gy);
  const __m256 vhalf = _mm256_set1_ps(0.5f), vfill = _mm256_set1_ps(fill);
  const __m256 vhigh = _mm256_set1_ps(255.5f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; k + 32 <= n; k += 32) {
    __m256i q[4];
    for (int u = 0; u < 4; ++u) {
      const __m256 g = _mm256_fmadd_ps(vgy, _mm256_loadu_ps(gx + k + 8 * u), vbase);
      const __m256 vb = b != nullptr ? widen(b + k + 8 * u) : vfill;
      const __m256 r = _mm256_fmadd_ps(g, _mm256_sub_ps(widen(a + k + 8 * u), vb),
                                       _mm256_add_ps(vb, vhalf));
      // Truncated: r >= 0.5 rounds the blend half up. Saturated as the tail and the other
      // backends do, the bottom by the packs below (a negative r truncates to <= 0, packed to
      // 0), the top by a clamp, as r >= 2^31 would convert to INT_MIN. min_ps returns its second
      // operand for a NaN: r, which converts to INT_MIN and packs to 0.
      q[u] = _mm256_cvttps_epi32(_mm256_min_ps(vhigh, r));
    }
    // packus works within 128-bit lanes: the bytes come out as dwords 0 4 1 5 2 6 3 7.
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]),
                                              _mm256_packus_epi32(q[2], q[3]));
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, order);
    if (Stream) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(o + k), ordered);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), ordered);
    }
  }
  blend_u8_fma(a + k, b != nullptr ? b + k : nullptr, fill, gx + k, base, gy, o + k, n - k);
}

}  // namespace

PYROBUST_TARGET_AVX2_FMA void blend_row_u8_avx2(const uint8_t* a, const uint8_t* b, float fill,
                                                const float* gx, float base, float gy,
                                                uint8_t* o, int64_t n) {
  blend_u8_avx2<false>(a, b, fill, gx, base, gy, o, n);
}

PYROBUST_TARGET_AVX2_FMA void blend_row_u8_avx2_stream(const uint8_t* a, const uint8_t* b,
                                                       float fill, const float* gx, float base,
                                                       float gy, uint8_t* o, int64_t n) {
  blend_u8_avx2<true>(a, b, fill, gx, base, gy, o, n);
}
#else
// Not built for these rows: u8_avx2_rows() is false and the kernel never calls them.
void blend_row_u8_avx2(const uint8_t* a, const uint8_t* b, float fill, const float* gx,
                       float base, float gy, uint8_t* o, int64_t n) {
  blend_row(a, b, fill, gx, base, gy, o, n);
}
void blend_row_u8_avx2_stream(const uint8_t* a, const uint8_t* b, float fill, const float* gx,
                              float base, float gy, uint8_t* o, int64_t n) {
  blend_row(a, b, fill, gx, base, gy, o, n);
}
#endif

}  // namespace pyrobust
