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
// Message passing (docs/CONTRACT.md, "Layer split"): a GraphInput may carry a FeatureExchange,
// the caller's way to make the node features of its ghost atoms equal to their owners' between
// two layers (LAMMPS forward communication) and to sum the gradients that land on ghost rows onto
// the owners (reverse communication). The layered backend (layered_backend.h) uses it, so LAMMPS
// needs a ghost shell of one cutoff instead of num_layers cutoffs; backends that evaluate the whole
// graph at once ignore it, and the engine only sends a graph with ghosts and no exchange to them.
#pragma once

#include <cstdint>
#include <string>

namespace mlip {

// The caller's graph (not owned): n_atoms nodes, the first n_local of them local (energy and
// forces count for them), species[n_atoms] model species indices, n_edges directed edges
// i -> j with edge_vec[3 e..3 e+2] = r_j - r_i. Backends receive it already validated
// (validate_graph in graph_input.h) and with n_atoms > 0.
// Ghost-row exchange between layers, provided by the caller (not owned). rows = [n_atoms][width]
// doubles in graph-node order; nodes [n_local, n_atoms) are ghosts of atoms owned by this caller
// or another process (an MPI rank). Every process of a decomposition calls these collectively, in
// the same order, with the same width.
class FeatureExchange {
 public:
  // Overwrites every ghost row with its owner's row (the owners' rows are complete on entry).
  virtual void forward(double* rows, int64_t width) const = 0;
  // Adds every ghost row onto its owner's row, wherever the owner lives; on return the local rows
  // [0, n_local) hold the sums (the ghost rows are left unspecified).
  virtual void reverse(double* rows, int64_t width) const = 0;

 protected:
  ~FeatureExchange() = default;  // never deleted through this interface
};

struct GraphInput {
  int64_t n_atoms = 0;
  int64_t n_local = 0;
  const int64_t* species = nullptr;
  int64_t n_edges = 0;
  const int64_t* edge_i = nullptr;
  const int64_t* edge_j = nullptr;
  const double* edge_vec = nullptr;
  // Optional (message passing on a one-cutoff graph): see FeatureExchange. nullptr = the graph is
  // complete as it is (n_local == n_atoms, or a ghost shell as deep as the interaction range).
  const FeatureExchange* exchange = nullptr;
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
