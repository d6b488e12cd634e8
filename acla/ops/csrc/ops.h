// The kernel's entry points, one per custom op of acla/ops/custom_ops.py (which holds their schemas, fake
// kernels and autograd); bindings.cpp exposes them to Python. Tensors are CPU, float32 or float64.
#pragma once

#include <torch/all.h>

#include <vector>

// Bilinear gather (cpu/gather_kernel.cpp): samples of every key, or their weighted sum, and the gradients.
torch::Tensor gather_forward(std::vector<torch::Tensor> maps, torch::Tensor positions, torch::Tensor weights);
std::vector<torch::Tensor> gather_backward(std::vector<torch::Tensor> maps, torch::Tensor positions,
                                           torch::Tensor weights, torch::Tensor grad, bool need_maps,
                                           bool need_positions, bool need_weights);

// CLA/ACLA with predicted logits, (S1)-(S7) in one walk per query (cpu/attend_kernel.cpp).
std::vector<torch::Tensor> attend_forward(std::vector<torch::Tensor> maps, torch::Tensor heads, torch::Tensor relaxed,
                                          torch::Tensor grid, bool gated);
std::vector<torch::Tensor> attend_open_forward(std::vector<torch::Tensor> maps, torch::Tensor rows,
                                               torch::Tensor scores, torch::Tensor offset_weight,
                                               torch::Tensor offset_bias, torch::Tensor logit_weight,
                                               torch::Tensor logit_bias, torch::Tensor grid);
std::vector<torch::Tensor> attend_backward(std::vector<torch::Tensor> maps, torch::Tensor heads, torch::Tensor softmax,
                                           torch::Tensor relaxed, torch::Tensor probability, torch::Tensor temperature,
                                           torch::Tensor grad_budget, torch::Tensor grid, bool gated,
                                           torch::Tensor grad, bool need_maps);
