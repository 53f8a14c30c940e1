// The caller's graph arrays: checking them, and moving them into and out of torch tensors.
//
// Why: the engine's callers (the ASE calculator through pybind11, the LAMMPS plugin through the
// C ABI) hand over raw pointers. validate_graph checks every index and value before any backend or
// torch sees them, so bad input gives one InputError line that names the atom or edge, never a
// crash or a torch traceback. The tensor half (graph_tensors, check_shape, copy_out) is shared by
// everything that runs the export's scripted methods (forward, grade); a torch.export backend
// would reuse it too.
#pragma once

#include "backend.h"

#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <cstdint>
#include <vector>

namespace mlip {

// Checks `g` for a model of n_species species (counts, NULL pointers, species and atom index
// ranges, finite edge vectors no shorter than MIN_DISTANCE). Throws InputError.
void validate_graph(const GraphInput& g, int64_t n_species);

// species [N] long, edge_index [2, E] long (row 0 = i, row 1 = j), edge_vec [E, 3] in `dtype`.
struct GraphTensors {
  at::Tensor species, edge_index, edge_vec;
};

// Copies `g` into new tensors (the caller's arrays stay untouched).
GraphTensors graph_tensors(const GraphInput& g, at::ScalarType dtype);

// Throws ModelError "model returned NAME with shape [...], expected [...]" unless t has `expected`.
void check_shape(const at::Tensor& t, std::vector<int64_t> expected, const char* name);

// Copies t (any dtype/device) as contiguous doubles into out[t.numel()].
void copy_out(const at::Tensor& t, double* out);

// The setting of one call of an export's scripted methods: the backend's thread count, autograd on
// (forces) or off, inference mode off (its tensors cannot enter autograd later), and the
// TorchScript graph optimizer as MLIP_JIT_OPTIMIZE says. Lives for the duration of the call.
class ScriptCallScope {
 public:
  ScriptCallScope(int num_threads, bool optimize, bool grad);

 private:
  c10::InferenceMode no_inference_{false};
  c10::AutoGradMode grad_;
  torch::jit::GraphOptimizerEnabledGuard optimize_;
};

}  // namespace mlip
