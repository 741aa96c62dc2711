// Argument checks shared by every op family (see checks.h).
#include "ops/checks.h"

#include <ATen/Dispatch_v2.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/stack.h>

#include <algorithm>

namespace pyrobust {

std::pair<int64_t, int64_t> value_range(const at::Tensor& values) {
  TORCH_CHECK(values.numel() > 0, "value_range of an empty tensor");
  if (!values.is_cpu()) {
    auto [lo, hi] = at::aminmax(values);
    const at::Tensor range = at::stack({lo, hi}).to(at::kLong).cpu();  // the one sync
    return {range[0].item<int64_t>(), range[1].item<int64_t>()};
  }
  int64_t low = 0, high = 0;
  const at::Tensor v = values.contiguous();
  AT_DISPATCH_V2(v.scalar_type(), "pyrobust_value_range", AT_WRAP([&] {
    const scalar_t* p = v.data_ptr<scalar_t>();
    const auto [lo, hi] = std::minmax_element(p, p + v.numel());
    low = static_cast<int64_t>(*lo);
    high = static_cast<int64_t>(*hi);
  }), AT_EXPAND(AT_INTEGRAL_TYPES_V2));
  return {low, high};
}

void check_index_range(const at::Tensor& values, int64_t bound, const char* what) {
  if (values.numel() == 0) return;
  const auto [low, high] = value_range(values);
  TORCH_CHECK_VALUE(low >= 0 && high < bound, what, " should be in [0, ", bound, "), got ",
                    low < 0 ? low : high);
}

}  // namespace pyrobust
