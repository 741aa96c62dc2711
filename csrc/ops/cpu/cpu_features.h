// What the host CPU offers, for kernels that pick a hand-written vector path at run time.
#pragma once

namespace pyrobust {

// True where the CPU has AVX2 and FMA (x86-64 only), unless ATEN_CPU_CAPABILITY=default:
// PyTorch's switch that keeps its own kernels on the portable code keeps these on it too (how
// the tests reach the portable path on an AVX2 machine). Read once. PYROBUST_CLONES functions
// (simd.h) pick their clone by the CPU alone.
bool cpu_has_avx2();

}  // namespace pyrobust
