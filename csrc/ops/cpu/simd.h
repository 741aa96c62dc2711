// Function multiversioning for the hot CPU loops. The extension is built for the baseline x86-64
// ISA (SSE2) so that it loads on any machine; a function marked PYROBUST_CLONES is compiled twice,
// for x86-64-v3 (AVX2, FMA, F16C) and for the baseline, and the loader picks the clone the CPU
// supports. Plain loops written branch-free are then vectorised 8-wide by GCC in the v3 clone; at
// the baseline SSE2 lacks, among others, the byte <-> float conversions of the uint8 blend.
// Only GCC on x86-64 (the pip build); elsewhere, and under the sanitizers, one plain version.
#pragma once

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define PYROBUST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PYROBUST_CLONES
#endif
