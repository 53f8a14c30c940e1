// The engine's backend interface: one evaluation of energies, forces and virials on a graph.
//
// Why: mlip::Engine runs an export through one of several evaluators that must agree to round-off:
// the export's own TorchScript `forward` (torchscript_backend.h, the reference that every export
// has) and the native kernels of our MTP and Deep Potential models (native_backends.h), which are
// several times faster. They all load the same way (from the loaded export module) and are called
// the same way (this interface); backend_factory.h picks one. The engine validates the input
// (graph_input.h), handles the empty graph and holds the lock; a backend only evaluates.
//
// The interface is deliberately free of torch types: a GraphInput is the caller's arrays, Outputs
// are the caller's buffers. A backend built on torch.export / AOTInductor (PyTorch has deprecated
// TorchScript in favour of them) implements it as well as the TorchScript one does.
//
// Planned extension (issue 12, message passing at production scale in LAMMPS; not implemented):
// a message-passing backend that evaluates layer by layer and, after each layer, lets the caller
// overwrite the features of ghost atoms with their owners' values (LAMMPS forward communication),
// and in the backward pass add the gradients on ghost features back onto the owners (reverse
// communication). That callback will be an *optional* addition that leaves compute() and every
// existing backend unchanged: e.g. a `const FeatureExchange* exchange = nullptr` member of
// GraphInput, which backends that evaluate the whole graph at once ignore, plus a capability query
// such as `virtual bool supports_exchange() const { return false; }` here, so that the pair style
// knows whether it may shrink the ghost shell to one cutoff. Keep new members of this interface
// optional with defaults for the same reason.
#pragma once

#include <cstdint>
#include <string>

namespace mlip {

// The caller's graph (not owned): n_atoms nodes, the first n_local of them local (energy and
// forces count for them), species[n_atoms] model species indices, n_edges directed edges
// i -> j with edge_vec[3 e..3 e+2] = r_j - r_i. Backends receive it already validated
// (validate_graph in graph_input.h) and with n_atoms > 0.
struct GraphInput {
  int64_t n_atoms = 0;
  int64_t n_local = 0;
  const int64_t* species = nullptr;
  int64_t n_edges = 0;
  const int64_t* edge_i = nullptr;
  const int64_t* edge_j = nullptr;
  const double* edge_vec = nullptr;
};

// The caller's output buffers (not owned, double): energy (sum of the atom energies of the first
// n_local atoms; never nullptr), atom_energy[n_atoms], forces[3 n_atoms], virial[9] (row-major),
// atom_virial[9 n_atoms]. Every pointer except `energy` may be nullptr to skip that output.
struct Outputs {
  double* energy = nullptr;
  double* atom_energy = nullptr;
  double* forces = nullptr;
  double* virial = nullptr;
  double* atom_virial = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Short name reported by Engine::backend(): "torchscript", "native-mtp", "native-deepmd".
  virtual const std::string& name() const = 0;

  // Fills `out` for graph `g`. Called by one thread at a time (the engine holds a mutex), so a
  // backend may keep scratch buffers between calls. Throws ModelError on failure inside the model.
  virtual void compute(const GraphInput& g, const Outputs& out) = 0;
};

}  // namespace mlip
