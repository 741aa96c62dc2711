// Transparent huge pages for large fresh host outputs (see docs/kernels.md, "Huge pages").
#pragma once

#include <ATen/core/Tensor.h>

namespace pyrobust {

// Asks the kernel to back `t` with transparent huge pages before its first touch, when `t` is a
// host tensor of more than 32 MiB (a block glibc maps afresh, not recycled heap memory) and
// PYROBUST_HUGE_PAGES is not "0". A hint: where it is refused or unsupported nothing changes.
void advise_huge_pages(const at::Tensor& t);

}  // namespace pyrobust
