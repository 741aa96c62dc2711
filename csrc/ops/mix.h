// Argument checks shared by the mixing kernels of every backend.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "ops/mix_profiles.h"

namespace pyrobust {

// Validates the arguments of pyrobust::mix / mix_mask and returns the parsed mode.
MaskMode check_mix_params(const at::Tensor& params, const std::string& mode, int64_t n);
void check_mix_args(const at::Tensor& images, const at::Tensor& partner, const at::Tensor& params,
                    const std::string& mode);

}  // namespace pyrobust
