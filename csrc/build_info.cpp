// The build-info op: what this core was compiled against.
//
// Kept apart from the Python module stub so the C++ tests (CMake, no Python) link it too.
#include <torch/library.h>

#include <string>

#ifndef PYROBUST_TORCH_VERSION
#define PYROBUST_TORCH_VERSION "unknown"
#endif
#ifndef PYROBUST_CUDA_VERSION
#define PYROBUST_CUDA_VERSION ""
#endif

namespace pyrobust {
namespace {

// JSON with the versions this core was compiled against; the Python side compares them with
// the running torch so a mismatch fails with a message instead of an undefined symbol.
std::string build_info() {
  std::string cuda = PYROBUST_CUDA_VERSION;
  return std::string("{\"torch\": \"") + PYROBUST_TORCH_VERSION + "\", \"cuda\": " +
         (cuda.empty() ? std::string("null") : "\"" + cuda + "\"") + "}";
}

}  // namespace

TORCH_LIBRARY(pyrobust, m) {
  // No tensor arguments, so a catch-all kernel: it runs whatever the dispatch keys.
  m.def("build_info() -> str", &build_info);
}

}  // namespace pyrobust
