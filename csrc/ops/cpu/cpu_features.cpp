// What the host CPU offers (see cpu_features.h).
#include "ops/cpu/cpu_features.h"

#include <cstdlib>
#include <string>

namespace pyrobust {

bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = [] {
    const char* capability = std::getenv("ATEN_CPU_CAPABILITY");
    if (capability != nullptr && std::string(capability) == "default") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace pyrobust
