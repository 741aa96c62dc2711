// C++ tests of the mixing kernels through the dispatcher: definitions, layouts, dtypes, errors.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>

#include "check.h"

namespace {

at::Tensor mix(const at::Tensor& x, const at::Tensor& partner, const at::Tensor& params,
               const std::string& mode, bool invert, std::optional<double> fill) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         c10::string_view, bool, std::optional<double>)>();
  return op.call(x, partner, params, mode, invert, fill);
}

at::Tensor mask(const at::Tensor& params, const std::string& mode, bool invert, int64_t h,
                int64_t w) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_mask", "")
                       .typed<at::Tensor(const at::Tensor&, c10::string_view, bool, int64_t,
                                         int64_t)>();
  return op.call(params, mode, invert, h, w);
}

at::Tensor lambda(const at::Tensor& params, const std::string& mode, bool invert, int64_t h,
                  int64_t w) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pyrobust::mix_lambda", "")
                       .typed<at::Tensor(const at::Tensor&, c10::string_view, bool, int64_t,
                                         int64_t)>();
  return op.call(params, mode, invert, h, w);
}

// The Gaussian mask, written out from its definition.
void test_gaussian_mask_definition() {
  auto params = at::zeros({1, 6}, at::kFloat);
  auto p = params.accessor<float, 2>();
  p[0][0] = 5.5f;  // cx
  p[0][1] = 3.0f;  // cy
  p[0][2] = 2.0f;  // sx
  p[0][3] = 4.0f;  // sy
  auto m = mask(params, "gaussian", false, 7, 9);
  auto a = m.accessor<float, 3>();
  for (int y = 0; y < 7; ++y) {
    for (int x = 0; x < 9; ++x) {
      const double dx = x + 0.5 - 5.5, dy = y + 0.5 - 3.0;
      const double g = std::exp(-dx * dx / 8.0 - dy * dy / 32.0);
      CHECK(std::abs(a[0][y][x] - g) < 1e-6);
    }
  }
  CHECK(std::abs(lambda(params, "gaussian", false, 7, 9).item<float>() -
                 m.mean().item<float>()) < 1e-6);
}

// Hard boxes copy pixels exactly; channels-last input gives channels-last output.
void test_hard_box_all_layouts_and_dtypes() {
  auto params = at::zeros({2, 6}, at::kFloat);
  auto p = params.accessor<float, 2>();
  p[0][0] = 4.f, p[0][1] = 4.f, p[0][2] = 2.f, p[0][3] = 1.f;  // box x in [2, 6), y in [3, 5)
  p[1][0] = 1.f, p[1][1] = 1.f, p[1][2] = 1.f, p[1][3] = 1.f;
  auto partner = at::tensor({1, 0}, at::kLong);
  auto box = 1 - mask(params, "trapezoid", true, 8, 8);  // 1 inside the box
  for (auto dtype : {at::kByte, at::kHalf, at::kBFloat16, at::kFloat, at::kDouble}) {
    for (bool channels_last : {false, true}) {
      auto x = (at::rand({2, 3, 8, 8}) * 200).to(dtype);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      auto out = mix(x, partner, params, "trapezoid", true, std::nullopt);
      CHECK(out.scalar_type() == dtype);
      CHECK(out.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                            : at::MemoryFormat::Contiguous));
      auto inside = box.unsqueeze(1).expand({2, 3, 8, 8}).to(at::kBool);
      CHECK(at::equal(out.masked_select(inside), x.index_select(0, partner).masked_select(inside)));
      CHECK(at::equal(out.masked_select(~inside), x.masked_select(~inside)));
    }
  }
}

void test_uint8_rounds_and_saturates() {
  auto x = at::full({1, 1, 2, 2}, 100, at::kByte);
  auto params = at::zeros({1, 6}, at::kFloat);
  params[0][0] = 0.5f;  // constant mask 0.5
  auto out = mix(x, at::zeros({1}, at::kLong), params, "constant", false, 101.0);
  CHECK(out[0][0][0][0].item<int>() == 101);  // 0.5 * 100 + 0.5 * 101 = 100.5 -> 101
  out = mix(x, at::zeros({1}, at::kLong), params, "constant", false, 301.0);
  CHECK(out[0][0][0][0].item<int>() == 178);  // fill saturated to 255: 177.5 -> 178
  params[0][0] = 0.0f;
  out = mix(x, at::zeros({1}, at::kLong), params, "constant", false, 400.0);
  CHECK(out[0][0][0][0].item<int>() == 255);
}

void test_errors_are_reported() {
  auto x = at::rand({2, 3, 4, 4});
  auto params = at::zeros({2, 6}, at::kFloat);
  CHECK_THROWS(mix(x, at::tensor({0, 2}, at::kLong), params, "gaussian", false, std::nullopt));
  CHECK_THROWS(mix(x, at::tensor({0, 1}, at::kLong), params, "hexagon", false, std::nullopt));
  CHECK_THROWS(mix(x[0], at::tensor({0, 1}, at::kLong), params, "gaussian", false, std::nullopt));
  CHECK_THROWS(mix(x.to(at::kInt), at::tensor({0, 1}, at::kLong), params, "constant", false,
                   std::nullopt));
  CHECK_THROWS(mix(x, at::tensor({0, 1}, at::kInt), params, "constant", false, std::nullopt));
  auto empty = mix(at::rand({0, 3, 4, 4}), at::zeros({0}, at::kLong), at::zeros({0, 6}),
                   "constant", false, std::nullopt);
  CHECK(empty.numel() == 0);
}

}  // namespace

int main() {
  test_gaussian_mask_definition();
  test_hard_box_all_layouts_and_dtypes();
  test_uint8_rounds_and_saturates();
  test_errors_are_reported();
  std::printf("test_mix: %d failure(s)\n", pyrobust_test::failures());
  return pyrobust_test::failures() == 0 ? 0 : 1;
}
