// PYROBUST_HD: a function for both the host and CUDA device code (plain inline in C++ builds).
#pragma once

#if defined(__CUDACC__)
#define PYROBUST_HD __host__ __device__ __forceinline__
#else
#define PYROBUST_HD inline
#endif
