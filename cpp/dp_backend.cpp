// DPBackend (native_backends.h): the Deep Potential export on mlip::DPKernel.
//
// Why a file of its own: the kernel (dp_kernel.cpp) reads its parameters from the scripted
// DeepPotSeA itself; what the engine adds is what every backend call needs around it: the thread
// count (its GEMMs run on ATen), inference mode (no autograd bookkeeping for those GEMMs) and the
// engine's one-line error for a torch failure.
#include "native_backends.h"

#include "engine.h"  // ModelError
#include "torch_errors.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/api/module.h>

#include <string>

namespace mlip {

bool DPBackend::accepts(const torch::jit::Module& export_module) {
  if (!export_module.hasattr("model") || !export_module.attr("model").isModule()) return false;
  auto sub = export_module.attr("model").toModule();
  for (const char* a : {"embedding", "fitting", "s_avg", "r_std"})
    if (!sub.hasattr(a)) return false;
  return true;
}

DPBackend::DPBackend(const torch::jit::Module& export_module, int num_threads)
    : kernel_(export_module.attr("model").toModule()), num_threads_(num_threads) {}

const std::string& DPBackend::name() const {
  static const std::string n = "native-deepmd";
  return n;
}

void DPBackend::compute(const GraphInput& g, const Outputs& out) {
  try {
    if (at::get_num_threads() != num_threads_) at::set_num_threads(num_threads_);
    c10::InferenceMode inference(true);
    kernel_.compute(g.n_atoms, g.n_local, g.species, g.n_edges, g.edge_i, g.edge_j, g.edge_vec,
                    out.energy, out.atom_energy, out.forces, out.virial, out.atom_virial);
  } catch (const c10::Error& e) {
    throw ModelError("model evaluation failed: " + torch_message(e));
  }
}

}  // namespace mlip
