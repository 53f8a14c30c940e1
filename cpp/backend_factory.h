// Choosing the backend an export runs on (see backend.h for the backends themselves).
//
// Why: the native kernels are the fast path for our own MTP and Deep Potential models, but the
// export's TorchScript is the contract (docs/CONTRACT.md). So a native backend is used only when
//   * the family has one ("mtp", "deepmd") and the export's model is our own class,
//   * the environment does not ask for the reference (MLIP_BACKEND=torch; default "native"), and
//   * it reproduces the file's own TorchScript on a small test cluster: an export written by an
//     older mlip may carry scripted formulas that the kernel no longer matches, and then the
//     TorchScript is what the file means.
// The choice is made in two steps because the engine sets its thread count in between (as it did
// before the backends were split out): make_native_backend, then native_matches_reference.
#pragma once

#include "backend.h"

#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <memory>
#include <string>

namespace mlip {

// The native backend for the loaded export `module` of `family`, or nullptr when there is none or
// MLIP_BACKEND=torch. Throws ModelError for a bad MLIP_BACKEND value (only for families with a
// native backend) or unreadable native parameters ("'PATH': cannot read the mtp parameters (...)").
std::unique_ptr<Backend> make_native_backend(const torch::jit::Module& module, const std::string& family,
                                             const std::string& path, int num_threads);

// True if `native` gives the energy and forces of `reference` (to 1e-9 relative for a float64
// export, 1e-3 for float32) on a small non-periodic cluster of max(3, n_species) atoms of every
// species, within `cutoff` of each other.
bool native_matches_reference(Backend& native, Backend& reference, int64_t n_species, double cutoff,
                              bool float64);

}  // namespace mlip
