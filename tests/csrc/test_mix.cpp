// C++ tests of the mixing kernels through the dispatcher: definitions, layouts, dtypes, errors.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "check.h"
#include "ops/mix.h"

namespace {

using pyrobust::mix;
using pyrobust::mix_lambda;
using pyrobust::mix_mask;

std::tuple<at::Tensor, at::Tensor> targets(const at::Tensor& x, const at::Tensor& labels,
                                           const at::Tensor& partner, const at::Tensor& params,
                                           const std::string& mode, int64_t k, double smoothing,
                                           bool mix_labels) {
  return pyrobust::mix_targets(x, labels, partner, params, mode, false, k, smoothing, mix_labels);
}

// A draw for 9 x 13 images, labels mixed except for Cutout.
std::tuple<at::Tensor, at::Tensor, at::Tensor> draw(int64_t n, const std::string& family,
                                                    std::vector<double> args, double p,
                                                    bool per_sample, const std::string& pairing) {
  return pyrobust::mix_draw(n, 9, 13, family, args, p, per_sample, pairing, family != "cutout");
}

// Every family, per sample and per batch, every pairing: shapes, a partner for each sample,
// unmixed samples paired with themselves.
void test_draw_shapes_and_partners() {
  const std::vector<std::pair<std::string, std::vector<double>>> families = {
      {"circle", {0.25, 0.5, 1.0}}, {"square", {0.0, 1.0, 0.2}}, {"cutmix", {1.0}},
      {"mixup", {0.3}}, {"cutout", {4.0, 0.0}}};
  for (const auto& [family, args] : families) {
    for (int64_t n : {0, 1, 7}) {
      for (bool per_sample : {true, false}) {
        for (const char* pairing : {"permute", "flip", "roll"}) {
          auto [partner, params, active] = draw(n, family, args, 0.5, per_sample, pairing);
          EXPECT(partner.sizes() == at::IntArrayRef({n}) && active.sizes() == partner.sizes());
          EXPECT(params.sizes() == at::IntArrayRef({n, 6}));
          if (n == 0) continue;
          EXPECT(partner.min().item<int64_t>() >= 0 && partner.max().item<int64_t>() < n);
          auto self = at::arange(n, at::kLong);
          EXPECT(at::equal(partner.masked_select(~active), self.masked_select(~active)));
        }
      }
    }
  }
  EXPECT_THROWS(draw(3, "hexagon", {1.0}, 1.0, true, "permute"));
  EXPECT_THROWS(draw(3, "mixup", {1.0}, 1.0, true, "zip"));
}

// The Gaussian mask, written out from its definition.
void test_gaussian_mask_definition() {
  auto params = at::zeros({1, 6}, at::kFloat);
  auto p = params.accessor<float, 2>();
  p[0][0] = 5.5f;  // cx
  p[0][1] = 3.0f;  // cy
  p[0][2] = 2.0f;  // sx
  p[0][3] = 4.0f;  // sy
  auto m = mix_mask(params, "gaussian", false, 7, 9);
  auto a = m.accessor<float, 3>();
  for (int y = 0; y < 7; ++y) {
    for (int x = 0; x < 9; ++x) {
      const double dx = x + 0.5 - 5.5, dy = y + 0.5 - 3.0;
      const double g = std::exp(-dx * dx / 8.0 - dy * dy / 32.0);
      EXPECT(std::abs(a[0][y][x] - g) < 1e-6);
    }
  }
  EXPECT(std::abs(mix_lambda(params, "gaussian", false, 7, 9).item<float>() -
                 m.mean().item<float>()) < 1e-6);
}

// Long rows: the CPU walks a Gaussian profile from its peak by a ratio recurrence; every value
// must still be the definition's, a centre off the image included.
void test_long_gaussian_rows() {
  auto params = at::zeros({3, 6}, at::kFloat);
  auto p = params.accessor<float, 2>();
  const float cx[3] = {1234.3f, -20.f, 3100.f}, sx[3] = {40.f, 300.f, 2.5f};
  for (int i = 0; i < 3; ++i) {
    p[i][0] = cx[i], p[i][1] = 0.5f, p[i][2] = sx[i], p[i][3] = 1.f;
  }
  const int64_t w = 3000;
  auto m = mix_mask(params, "gaussian", false, 1, w);
  auto a = m.accessor<float, 3>();
  double worst = 0;
  for (int i = 0; i < 3; ++i) {
    for (int64_t x = 0; x < w; ++x) {
      const double dx = x + 0.5 - cx[i];
      const double g = std::exp(-dx * dx / (2.0 * sx[i] * sx[i]));
      worst = std::max(worst, std::abs(a[i][0][x] - g) / std::max(g, 1e-30));
    }
  }
  EXPECT(worst < 1e-6);  // relative, down to the smallest values
}

// lam and the targets rows from their definitions: constant masks make lam the parameter.
void test_targets_definition() {
  auto x = at::rand({3, 1, 2, 5});
  auto params = at::zeros({3, 6}, at::kFloat);
  params[0][0] = 0.25f, params[1][0] = 0.5f, params[2][0] = 0.75f;
  auto labels = at::tensor({1, 2, 2}, at::kLong);
  auto partner = at::tensor({1, 0, 2}, at::kLong);  // sample 2 with itself: unmixed
  auto [t, lam] = targets(x, labels, partner, params, "constant", 4, 0.2, true);
  const float f = 0.05f;  // 0.2 / 4; the labels share 0.8
  const float want[3][4] = {{f, f + 0.2f, f + 0.6f, f}, {f, f + 0.4f, f + 0.4f, f},
                            {f, f, f + 0.8f, f}};
  const float want_lam[3] = {0.25f, 0.5f, 1.f};
  for (int i = 0; i < 3; ++i) {
    EXPECT(std::abs(lam[i].item<float>() - want_lam[i]) < 1e-6);
    for (int c = 0; c < 4; ++c) EXPECT(std::abs(t[i][c].item<float>() - want[i][c]) < 1e-6);
  }
  auto [own, ones] = targets(x, labels, partner, params, "constant", 4, 0.0, false);  // Cutout
  EXPECT(at::equal(ones, at::ones({3})));
  EXPECT(at::equal(own, at::one_hot(labels, 4).to(at::kFloat)));
  EXPECT_THROWS(targets(x, at::tensor({1, 4, 0}, at::kLong), partner, params, "constant", 4, 0.0,
                       true));
  EXPECT_THROWS(targets(x, labels, at::tensor({1, 3, 0}, at::kLong), params, "constant", 4, 0.0,
                       true));
}

// Hard boxes copy pixels exactly; channels-last input gives channels-last output.
void test_hard_box_all_layouts_and_dtypes() {
  auto params = at::zeros({2, 6}, at::kFloat);
  auto p = params.accessor<float, 2>();
  p[0][0] = 4.f, p[0][1] = 4.f, p[0][2] = 2.f, p[0][3] = 1.f;  // box x in [2, 6), y in [3, 5)
  p[1][0] = 1.f, p[1][1] = 1.f, p[1][2] = 1.f, p[1][3] = 1.f;
  auto partner = at::tensor({1, 0}, at::kLong);
  auto box = 1 - mix_mask(params, "trapezoid", true, 8, 8);  // 1 inside the box
  for (auto dtype : {at::kByte, at::kHalf, at::kBFloat16, at::kFloat, at::kDouble}) {
    for (bool channels_last : {false, true}) {
      auto x = (at::rand({2, 3, 8, 8}) * 200).to(dtype);
      if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      auto out = mix(x, partner, params, "trapezoid", true, std::nullopt);
      EXPECT(out.scalar_type() == dtype);
      EXPECT(out.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                            : at::MemoryFormat::Contiguous));
      auto inside = box.unsqueeze(1).expand({2, 3, 8, 8}).to(at::kBool);
      EXPECT(at::equal(out.masked_select(inside), x.index_select(0, partner).masked_select(inside)));
      EXPECT(at::equal(out.masked_select(~inside), x.masked_select(~inside)));
    }
  }
}

// Rows of 77 bytes: on x86-64 with AVX2, two 32-byte vector steps and a scalar tail of 13.
void test_uint8_rounds_and_saturates() {
  const auto all_equal = [](const at::Tensor& t, int v) {
    return at::equal(t, at::full_like(t, v));
  };
  auto x = at::full({1, 1, 2, 77}, 100, at::kByte);
  auto params = at::zeros({1, 6}, at::kFloat);
  params[0][0] = 0.5f;  // constant mask 0.5
  auto out = mix(x, at::zeros({1}, at::kLong), params, "constant", false, 101.0);
  EXPECT(all_equal(out, 101));  // 0.5 * 100 + 0.5 * 101 = 100.5 -> 101 (ties round up)
  out = mix(x, at::zeros({1}, at::kLong), params, "constant", false, 301.0);
  EXPECT(all_equal(out, 178));  // fill saturated to 255: 177.5 -> 178
  params[0][0] = 0.0f;
  out = mix(x, at::zeros({1}, at::kLong), params, "constant", false, 400.0);
  EXPECT(all_equal(out, 255));
  // Two images of different ramps, each other's partner, mask 0.5: every output byte is
  // (a + b) / 2 rounded half up, i.e. (a + b + 1) / 2, in its own place (a wrong byte order in
  // the vector rows would show).
  auto ramp = at::arange(3 * 2 * 77, at::kLong).view({1, 3, 2, 77});
  auto a = (ramp * 7) % 256, b = (ramp * 13 + 5) % 256;
  auto pair = at::cat({a, b}).to(at::kByte);
  auto expected = at::cat({(a + b + 1) / 2, (a + b + 1) / 2}).to(at::kByte);
  auto halves = at::zeros({2, 6}, at::kFloat);
  halves.select(1, 0).fill_(0.5f);
  for (bool channels_last : {false, true}) {
    auto xi = channels_last ? pair.contiguous(at::MemoryFormat::ChannelsLast) : pair;
    out = mix(xi, at::tensor({1, 0}, at::kLong), halves, "constant", false, std::nullopt);
    EXPECT(at::equal(out.contiguous(), expected));
  }
}

// mix_batch is mix_draw, mix_targets and mix in turn: the same results, bit for bit, from the
// same generator state.
void test_batch_is_the_three_ops() {
  const std::vector<double> args = {0.25, 0.5, 1.0};
  auto x = (at::rand({6, 3, 9, 13}) * 255).to(at::kByte);
  auto labels = at::tensor({0, 1, 2, 3, 4, 0}, at::kLong);
  auto gen = at::detail::createCPUGenerator(11);
  auto [partner, params, active] =
      pyrobust::mix_draw(6, 9, 13, "circle", args, 0.8, true, "permute", true, gen);
  auto [soft, lam] = targets(x, labels, partner, params, "gaussian", 5, 0.1, true);
  auto mixed = mix(x, partner, params, "gaussian", false, std::nullopt);
  auto batch = pyrobust::mix_batch(x, labels, "circle", args, 0.8, true, "permute",
                                   at::detail::createCPUGenerator(11), "gaussian", false,
                                   std::nullopt, 5, 0.1, true);
  EXPECT(at::equal(std::get<0>(batch), mixed) && at::equal(std::get<1>(batch), soft) &&
         at::equal(std::get<2>(batch), lam) && at::equal(std::get<3>(batch), partner) &&
         at::equal(std::get<4>(batch), params));
}

// mix_pairs_ in place is mix.out of the flipped batch, bit for bit; the middle sample of an odd
// batch and a sample marked -1 are left as they are (its partner still mixes with it).
void test_pairs_in_place() {
  for (const auto dtype : {at::kFloat, at::kByte}) {
    const auto x = dtype == at::kByte ? (at::rand({5, 3, 9, 13}) * 255).to(at::kByte)
                                      : at::rand({5, 3, 9, 13});
    auto params = at::zeros({5, 6}, at::kFloat);
    params.select(1, 0).fill_(0.3);
    auto modes = at::full({5}, 2, at::kLong);
    const auto invert = at::zeros({5}, at::kBool);
    const auto flip = at::arange(4, -1, -1, at::kLong);
    const auto expected = mix(x, flip, params, "constant", false, std::nullopt);
    auto y = x.clone();
    pyrobust::mix_pairs_(y, params, modes, invert);
    EXPECT(at::equal(y, expected));
    modes[1].fill_(-1);
    y = x.clone();
    pyrobust::mix_pairs_(y, params, modes, invert);
    EXPECT(at::equal(y[1], x[1]) && at::equal(y[3], expected[3]) && at::equal(y[2], x[2]));
    EXPECT_THROWS(pyrobust::mix_pairs_(y.transpose(2, 3), params, modes, invert));
    EXPECT_THROWS(pyrobust::mix_pairs_(y, params, at::full({5}, 3, at::kLong), invert));
  }
}

void test_errors_are_reported() {
  auto x = at::rand({2, 3, 4, 4});
  auto params = at::zeros({2, 6}, at::kFloat);
  EXPECT_THROWS(mix(x, at::tensor({0, 2}, at::kLong), params, "gaussian", false, std::nullopt));
  EXPECT_THROWS(mix(x, at::tensor({0, 1}, at::kLong), params, "hexagon", false, std::nullopt));
  EXPECT_THROWS(mix(x[0], at::tensor({0, 1}, at::kLong), params, "gaussian", false, std::nullopt));
  EXPECT_THROWS(mix(x.to(at::kInt), at::tensor({0, 1}, at::kLong), params, "constant", false,
                   std::nullopt));
  EXPECT_THROWS(mix(x, at::tensor({0, 1}, at::kInt), params, "constant", false, std::nullopt));
  auto empty = mix(at::rand({0, 3, 4, 4}), at::zeros({0}, at::kLong), at::zeros({0, 6}),
                   "constant", false, std::nullopt);
  EXPECT(empty.numel() == 0);
}

}  // namespace

int main() {
  test_draw_shapes_and_partners();
  test_gaussian_mask_definition();
  test_long_gaussian_rows();
  test_targets_definition();
  test_hard_box_all_layouts_and_dtypes();
  test_uint8_rounds_and_saturates();
  test_batch_is_the_three_ops();
  test_pairs_in_place();
  test_errors_are_reported();
  std::printf("test_mix: %d failure(s)\n", pyrobust_test::failures());
  return pyrobust_test::failures() == 0 ? 0 : 1;
}
