// The TorchScript backend: runs the export's own scripted `forward` (and `grade`).
//
// Why: every mlip export carries its model as TorchScript, so this backend runs any family,
// including hand-written exports that only follow docs/CONTRACT.md. It is also the reference that
// a native kernel must reproduce before the engine uses it (backend_factory.h), and the only path
// of the extrapolation grade, which runs every N steps only and so needs no native kernel.
// Forces come from autograd inside the scripted model, so compute() runs with grad mode on.
#pragma once

#include "backend.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/csrc/jit/api/module.h>

#include <string>

namespace mlip {

class TorchScriptBackend : public Backend {
 public:
  // `module` = the loaded export (shared, not copied); `dtype` its float type (float64/float32);
  // `optimize` = MLIP_JIT_OPTIMIZE (the TorchScript graph optimizer during calls).
  // `device`: where the module lives and the graph tensors go (outputs come back to the host).
  TorchScriptBackend(torch::jit::Module module, at::ScalarType dtype, int num_threads, bool optimize,
                     c10::Device device = c10::Device(c10::kCPU));

  const std::string& name() const override;
  // Throws ModelError "model evaluation failed: ..." or "model returned ..." (wrong outputs).
  void compute(const GraphInput& g, const Outputs& out) override;

  // The export's `grade` method: gamma[n_local] for the first n_local atoms (n_local > 0).
  // Throws ModelError "extrapolation grade failed: ..." or "grade returned ...".
  void grade(const GraphInput& g, double* gamma);

 private:
  torch::jit::Module module_;
  at::ScalarType dtype_;
  int num_threads_;
  bool optimize_;
  c10::Device device_;
};

}  // namespace mlip
