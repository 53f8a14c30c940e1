/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: LAMMPS neighbour list -> the engine's edge graph.

   Why a class of its own: the graph is the one data structure that every
   part of the style shares. The driving model's forces, the committee's
   other models and the extrapolation grade are all evaluated on the graph of
   the current force call, so it is built once per call here and handed out
   as MLIPGraphInput views (docs/CONTRACT.md):
     nodes = local atoms of the neighbour list first (the n_local whose
             energies count), then every ghost atom that is a neighbour (or,
             for message-passing models, a ghost centre); LAMMPS ghosts are
             separate nodes, so edge_vec = x[j] - x[i] directly, no image
             shifts.
     edges = (i -> j) for |x[j] - x[i]| < cutoff from the full neighbour list;
             only local centres for local models and for message-passing
             models with the per-layer feature exchange (a one-cutoff graph,
             edges sorted by centre), local + ghost centres for message-passing
             models on a deep ghost shell (ghost neighbour list).
   Except on a deep ghost shell, a ghost that is a periodic image of an atom
   owned by the same rank is folded onto that atom's node (fewer nodes,
   identical result).
   With several models (a committee) the graph uses the largest cutoff and
   each model with a smaller one gets the edges shorter than its own cutoff,
   in graph order, rebuilt lazily once per graph.

   The node -> atom map is also what per-atom exchanges between ghosts and
   their owners go through (MLIPAtomRows below).
------------------------------------------------------------------------- */

#ifndef LMP_MLIP_GRAPH_BUILDER_H
#define LMP_MLIP_GRAPH_BUILDER_H

#include "mlip_engine_api.h"
#include "pointers.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

// Per-atom rows [nall][width] that travel through LAMMPS' ghost communication
// (Comm::reverse_comm(Pair *), Comm::forward_comm(Pair *)): a helper of the pair style that needs
// ghost rows summed onto their owners (reverse) or owners' rows copied to their ghosts (forward)
// implements this, and PairMLIP forwards its pack/unpack_*_comm to it.
class MLIPAtomRows {
 public:
  virtual int pack_reverse(int n, int first, double *buf) = 0;
  virtual void unpack_reverse(int n, const int *list, const double *buf) = 0;
  virtual int pack_forward(int /*n*/, const int * /*list*/, double * /*buf*/) { return 0; }
  virtual void unpack_forward(int /*n*/, int /*first*/, const double * /*buf*/) {}

 protected:
  ~MLIPAtomRows() = default;    // never deleted through this interface
};

class MLIPGraphBuilder : protected Pointers {
 public:
  explicit MLIPGraphBuilder(class LAMMPS *);

  // After the models are loaded: graph cutoff (the largest model cutoff), whether ghost
  // centres carry edges (message passing on a deep ghost shell), and each model's own cutoff.
  // `exchange` (message passing with per-layer feature exchange; nullptr otherwise) goes with
  // every graph input: a one-cutoff graph, images folded as for local models. Forgets the last graph.
  void setup(double cutoff, bool ghost_centres, const std::vector<double> &model_cutoffs,
             MLIPExchangeFn exchange = nullptr, void *exchange_ctx = nullptr);

  // Rebuilds the graph from `list` (full, plus ghost neighbours for message passing).
  // type2species[type] = model species index, -1 for types this style does not handle.
  void build(class NeighList *list, const std::vector<int> &type2species);

  // graph of model m: the whole graph, or its own edge subset if its cutoff is smaller
  MLIPGraphInput input(int m);

  int64_t num_nodes() const { return (int64_t) atom_of.size(); }
  int64_t num_local() const { return n_local; }
  // graph node -> LAMMPS atom index (local or ghost)
  const std::vector<int> &node_atoms() const { return atom_of; }
  // incremented by every build(); -1 before the first one
  long serial() const { return graph_serial; }
  // timestep of the last build(); -1 before the first one
  bigint timestep() const { return graph_step; }
  double memory_usage() const;

 private:
  struct EdgeSubset {
    double cutsq = 0.0;
    bool filtered = false;    // cutoff < graph cutoff: own edge subset
    std::vector<int64_t> edge_i, edge_j;
    std::vector<double> edge_vec;
    long serial = -1;         // graph_serial the subset belongs to
  };

  double cutsq;
  bool message_passing;    // ghost centres carry edges (deep ghost shell)
  MLIPExchangeFn exchange_fn;
  void *exchange_ctx;
  std::vector<EdgeSubset> subsets;    // [models]

  std::vector<int> node_of;        // LAMMPS atom index -> graph node (-1: not a node)
  std::vector<int> atom_of;        // graph node -> LAMMPS atom index
  std::vector<int> node_of_tag;    // atom tag -> node of the owned atom with that tag (-1: none)
  std::vector<int64_t> species, edge_i, edge_j;
  std::vector<double> edge_vec, edge_rsq;
  int64_t n_local;
  long graph_serial;
  bigint graph_step;

  std::string atom_name(int a) const;    // "atom ID 7" (LAMMPS tag)
  // error->one: a non-finite position of i or j, else i and j at the same position
  [[noreturn]] void refuse_pair(int i, int j, double rsq) const;
};

}    // namespace LAMMPS_NS

#endif
