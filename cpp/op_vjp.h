// Shared by the training ops (dp_embedding_op.cpp, dp_hermite_op.cpp): the differentiable
// vector-Jacobian product of an op's (value, slope) outputs recomputed in ATen, for the rare
// higher-order use (gradgradcheck); training itself takes the ops' analytic backward.
#pragma once

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

namespace mlip {

// Gradients of <gG, G> + <gGp, Gp> (undefined gradients skipped) with respect to `inputs`, written into
// `out` at `slots`; G, Gp are differentiable functions of `inputs` (create_graph: differentiable again).
inline void vjp_into(torch::autograd::variable_list& out, const std::vector<size_t>& slots,
                     const torch::autograd::variable_list& inputs, const at::Tensor& G, const at::Tensor& Gp,
                     const at::Tensor& gG, const at::Tensor& gGp) {
  torch::autograd::variable_list outs, gouts;
  if (gG.defined()) {
    outs.push_back(G);
    gouts.push_back(gG);
  }
  if (gGp.defined()) {
    outs.push_back(Gp);
    gouts.push_back(gGp);
  }
  torch::autograd::variable_list g = torch::autograd::grad(outs, inputs, gouts, /*retain_graph=*/true,
                                                           /*create_graph=*/true, /*allow_unused=*/true);
  for (size_t k = 0; k < slots.size(); ++k) out[slots[k]] = g[k];
}

}  // namespace mlip
