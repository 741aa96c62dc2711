// Transparent huge pages for large fresh host outputs (see huge_pages.h and docs/kernels.md).
//
// A fresh output of tens of MB is first touched by the kernel that writes it; in 4 KiB pages
// those page faults can cost more than the blend itself. Where the kernel offers transparent
// huge pages on request (transparent_hugepage/enabled = madvise, a common default), asking for
// them before the first touch takes 512 times fewer faults (2 MiB pages for 4 KiB): what PyTorch's
// THP_MEM_ALLOC_ENABLE=1 does for every allocation, here for the mixers' outputs only.
#include "ops/cpu/huge_pages.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pyrobust {
namespace {

// PYROBUST_HUGE_PAGES=0 turns the hint off (on a host where the kernel's direct compaction for
// huge pages stalls, say).
bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* v = std::getenv("PYROBUST_HUGE_PAGES");
    return v == nullptr || std::string(v) != "0";
  }();
  return wanted;
}

}  // namespace

void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  // glibc's largest mmap threshold: larger blocks are always mapped afresh, while smaller ones
  // may be recycled heap memory, already touched, where the hint would only split the mapping.
  constexpr size_t kFreshMapping = size_t(32) << 20;
  if (!t.is_cpu() || t.nbytes() <= kFreshMapping || !huge_pages_wanted()) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (begin + t.nbytes()) & ~(kHuge - 1);
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

}  // namespace pyrobust
