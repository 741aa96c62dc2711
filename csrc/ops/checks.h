// Argument checks shared by every op family.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace pyrobust {

// (min, max) of a non-empty integer tensor: a loop for a host tensor, one sync for a device one.
std::pair<int64_t, int64_t> value_range(const at::Tensor& values);

// Every value of the integer tensor `values` in [0, bound) (a ValueError naming `what`, the bound
// and the first value outside it). Host values are checked in a loop; device values cost one sync.
void check_index_range(const at::Tensor& values, int64_t bound, const char* what);

}  // namespace pyrobust
