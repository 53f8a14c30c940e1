// The layered backend: a message-passing export evaluated block by block, with the caller's
// feature exchange between blocks (docs/CONTRACT.md, "Layer split").
//
// Why: evaluated as one function, a message-passing model needs every atom within
// num_layers × cutoff of a local atom (LAMMPS: a ghost shell that deep, whose features every rank
// recomputes: 3× the work and 1.5 MB per atom for the NequIP benchmark model). Evaluated layer by
// layer, it needs only one cutoff of ghosts, provided their features are made equal to their
// owners' after each block (forward exchange) and the gradients on them are summed onto the
// owners in the backward pass (reverse exchange) — what DeePMD-kit's border_op and LAMMPS ML-IAP's
// forward/reverse_exchange do. Each edge is then evaluated once, on the rank that owns its centre.
//
// Memory: the forward pass keeps only the node features between blocks ([N, width] per block); the
// backward pass recomputes one block for one chunk of centres at a time (the export's layer_vjp),
// so the autograd intermediates alive at once are those of `chunk` centres, whatever N is.
//
// The export provides the split as plain tensor functions with explicit vector-Jacobian products
// (layer_embed, layer_forward, layer_vjp, layer_readout, layer_grade; widths in `layer_widths`),
// so a torch.export / AOTInductor version of this backend needs nothing TorchScript-specific.
#pragma once

#include "backend.h"
#include "graph_input.h"

#include <c10/core/ScalarType.h>
#include <torch/csrc/jit/api/module.h>

#include <string>
#include <vector>

namespace mlip {

class LayeredBackend : public Backend {
 public:
  // True if the loaded export has the layer split (ExportedLayeredModel).
  static bool accepts(const torch::jit::Module& module);

  // chunk: centres per recomputed piece of the backward pass (MLIP_LAYER_CHUNK, default 64:
  // the fastest measured, ~20 kB/atom of intermediates on the NequIP benchmark model).
  LayeredBackend(torch::jit::Module module, at::ScalarType dtype, int num_threads, bool optimize);

  const std::string& name() const override;

  // True if `g` can run here: either complete (n_local == n_atoms: no ghosts) or with an exchange
  // for its ghosts, and every edge centred on a local atom, sorted by centre (a one-cutoff graph).
  bool handles(const GraphInput& g) const;

  void compute(const GraphInput& g, const Outputs& out) override;
  // the widest feature row an exchange carries
  int64_t max_width() const;
  // gamma[n_local] from the last block's features of the local atoms (the export's layer_grade).
  void grade(const GraphInput& g, double* gamma);

 private:
  // h_0 .. h_L: [n_atoms, width_k] for k < L (ghost rows exchanged), h_L [n_local, width_L]
  std::vector<at::Tensor> features(const GraphTensors& t, const GraphInput& g);
  void exchange(at::Tensor& rows, const GraphInput& g, bool forward) const;

  torch::jit::Module module_;
  at::ScalarType dtype_;
  int num_threads_;
  bool optimize_;
  int64_t chunk_;
  std::vector<int64_t> widths_;  // layer_widths: [w_0, ..., w_L]
  bool has_pair_ = false;        // optional layer_pair (a two-body term beside the blocks; older exports lack it)
};

}  // namespace mlip
