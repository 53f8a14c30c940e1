// Native backends: the MTP and Deep Potential exports evaluated by plain C++ kernels.
//
// Why: for these two families a step through TorchScript + autograd is mostly bookkeeping
// (see mtp_kernel.h and dp_kernel.h); the kernels are several times faster. Each backend builds
// itself from the loaded export module, reading the very parameters of the scripted model (its
// `model` attribute), so there is no second file format that could drift from the TorchScript.
// Both load the same way: `accepts` says whether the export's model is our own class (a
// hand-written export may claim a family name without having our attributes), the constructor
// reads the parameters. backend_factory.h decides whether to use them at all.
#pragma once

#include "backend.h"
#include "dp_kernel.h"
#include "mtp_kernel.h"

#include <string>

// torch::jit::Module is forward-declared in dp_kernel.h (no torch header here)

namespace mlip {

// Family "mtp" (a scripted mlip.models.mtp.MTP) on mlip::MTPKernel; always float64.
class MTPBackend : public Backend {
 public:
  static bool accepts(const torch::jit::Module& export_module);
  // Throws c10::Error (missing attribute) or std::invalid_argument (inconsistent parameters).
  explicit MTPBackend(const torch::jit::Module& export_module);

  const std::string& name() const override;
  void compute(const GraphInput& g, const Outputs& out) override;

 private:
  MTPKernel kernel_;
};

// Family "deepmd" (a scripted mlip.models.deepmd.DeepPotSeA) on mlip::DPKernel (its GEMMs run on
// ATen with num_threads threads); computes in float64 whatever the export dtype.
class DPBackend : public Backend {
 public:
  static bool accepts(const torch::jit::Module& export_module);
  // Throws c10::Error (missing attribute) or std::invalid_argument (inconsistent parameters).
  DPBackend(const torch::jit::Module& export_module, int num_threads);

  const std::string& name() const override;
  // Throws ModelError "model evaluation failed: ..." on a torch error inside the kernel.
  void compute(const GraphInput& g, const Outputs& out) override;

 private:
  DPKernel kernel_;
  int num_threads_;
};

}  // namespace mlip
