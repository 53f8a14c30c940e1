/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: the per-layer feature exchange of message-passing models.

   Why: evaluated layer by layer (docs/CONTRACT.md, "Layer split"), a
   message-passing model needs ghost atoms only one cutoff deep, provided that
   after each layer every ghost's features are its owner's (LAMMPS forward
   communication) and that in the backward pass the gradients landing on
   ghost features are added to their owners (reverse communication) — the
   scheme of DeePMD-kit's border_op and LAMMPS ML-IAP's forward/reverse
   exchange, here on CPU ranks for any export with the layer split. The
   engine calls back into this class between layers (mlip_exchange_fn); it
   moves graph-node rows to per-atom rows, runs Comm::forward_comm /
   reverse_comm through the pair style, and moves them back.

   Widths: comm_forward and comm_reverse of the pair style must be at least
   MLIPModelSet::exchange_width() (set in PairMLIP::open_models, before
   Comm::init sizes its buffers).
------------------------------------------------------------------------- */

#ifndef LMP_MLIP_FEATURE_EXCHANGE_H
#define LMP_MLIP_FEATURE_EXCHANGE_H

#include "mlip_graph_builder.h"

#include <vector>

namespace LAMMPS_NS {

class MLIPFeatureExchange : public MLIPAtomRows, protected Pointers {
 public:
  // `pair` runs the communication (its pack/unpack_*_comm forward here while `active`)
  MLIPFeatureExchange(class LAMMPS *, class PairMLIP *pair, const MLIPGraphBuilder &graph);

  // the engine's callback (mlip_exchange_fn): ctx = this
  static int callback(void *ctx, int reverse, int64_t width, double *rows);

  int pack_forward(int n, const int *list, double *buf) override;
  void unpack_forward(int n, int first, const double *buf) override;
  int pack_reverse(int n, int first, double *buf) override;
  void unpack_reverse(int n, const int *list, const double *buf) override;

  double memory_usage() const { return (double) rows.capacity() * sizeof(double); }

 private:
  class PairMLIP *pair;
  const MLIPGraphBuilder &graph;
  std::vector<double> rows;    // [nall][width] per-atom rows in flight
  int width;

  void forward(double *node_rows);
  void reverse(double *node_rows);
};

}    // namespace LAMMPS_NS

#endif
