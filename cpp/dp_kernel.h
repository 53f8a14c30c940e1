// Native evaluation of a Deep Potential export (family "deepmd", se_e2_a): energies, forces, virials.
//
// Why: through TorchScript + autograd, two thirds of a DP step were element-wise passes (tanh and its
// backward, products, sums) over [edges x 100] tensors far larger than the caches, and the autograd
// graph kept every intermediate. This kernel
//   * runs the embedding nets in forward mode: the input of an embedding net is one scalar per edge,
//     so dG/ds is carried along with G (one extra GEMM per layer) and no backward pass through the
//     embedding nets exists at all;
//   * does it in chunks of edges that stay in cache, with the GEMMs on ATen/BLAS;
//   * batches each species' fitting net over its atoms (forward, then the input gradient only).
// It reads the very parameters of the scripted module (mlip.models.deepmd.DeepPotSeA), computes in
// float64 whatever the export dtype, and must equal the TorchScript graph to round-off
// (tests/test_dp_native.py).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace torch {
namespace jit {
struct Module;
}
}  // namespace torch

namespace mlip {

class DPKernel {
 public:
  // `deepmd_module` = the export's `model` attribute (a scripted DeepPotSeA).
  explicit DPKernel(const torch::jit::Module& deepmd_module);
  ~DPKernel();

  // Same graph and output conventions as Engine::compute.
  void compute(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
               const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec, double* energy,
               double* atom_energy, double* forces, double* virial, double* atom_virial);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlip
