/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: machine-learned interatomic potentials exported by the
   `mlip` Python package (TorchScript), evaluated by mlip's C++ engine.

     pair_style mlip MODEL.pt [MODEL2.pt ...] [keyword value(s) ...]
     pair_coeff * * El1 El2 ...      (one element or NULL per atom type)

   This file works both as part of the LAMMPS plugin (mlip_plugin.cpp) and
   copied into a LAMMPS source tree (src/), where the PairStyle() block below
   registers the style at compile time.

   The class is the LAMMPS-facing part only, laid out like LAMMPS' own
   many-body styles (pair_snap.cpp): settings() parses the keywords, coeff()
   opens the models and maps atom types to elements (map_element2type),
   init_style() requests the neighbour list, compute() builds the graph,
   evaluates the driving model and tallies. The work is done by plain C++
   helpers that the style owns (as PairSNAP owns SNA):
     mlip_engine_api     dlopen()ed engine and its C ABI (no libtorch link:
                         RTLD_LOCAL | RTLD_DEEPBIND, see that file)
     mlip_model_set      the models of a pair_style: files, committee checks,
                         graph cutoff, units
     mlip_graph_builder  neighbour list -> edge graph of docs/CONTRACT.md
     mlip_committee      model deviation of a committee and its file
     mlip_gamma_monitor  extrapolation grade, gamma_select / gamma_break
     mlip_feature_exchange  ghost features between the layers of a
                         message-passing model (one-cutoff ghost shell)
------------------------------------------------------------------------- */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(mlip,PairMLIP);
// clang-format on
#else

#ifndef LMP_PAIR_MLIP_H
#define LMP_PAIR_MLIP_H

#include "mlip_engine_api.h"
#include "pair.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class MLIPAtomRows;
class MLIPCommittee;
class MLIPFeatureExchange;
class MLIPGammaMonitor;
class MLIPGraphBuilder;
class MLIPModelSet;

class PairMLIP : public Pair {
 public:
  PairMLIP(class LAMMPS *);
  ~PairMLIP() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  double memory_usage() override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;

  // per-atom rows of a helper through LAMMPS' ghost communication: reverse (ghost rows summed
  // onto their owners) or forward (owners' rows copied to their ghosts); collective
  void exchange_rows(MLIPAtomRows *, bool reverse);

  // ---- used by compute mlip/gamma (collective calls: every rank must make them)
  // true if at least one model of the style carries an active set
  bool has_grade() const;
  // evaluates gamma on the graph of the last force call (once per graph); `who` names the caller
  // in error messages. Applies gamma_select / gamma_break to a fresh evaluation.
  void ensure_gamma(const char *who);
  // step of the last force call (the graph gamma is evaluated on)
  bigint graph_timestep() const;
  // per-atom gamma of the local atoms (0 for atoms not handled by this style), valid after
  // ensure_gamma() until the next force call; and its maximum over all ranks
  const double *atom_gamma() const;
  double gamma_max() const;

 protected:
  // pair_style
  std::vector<std::string> model_files;    // as given; pair_coeff resolves and opens them
  int num_threads;                         // libtorch threads per MPI rank

  // pair_coeff
  double energy_scale;    // model energy unit -> LAMMPS energy unit
  // atom type -> model species index through map[] (map_element2type), -1 = NULL; and the
  // element name of each type ("X" for NULL), [ntypes+1]
  std::vector<int> type2species;
  std::vector<std::string> type_element;

  // helpers (owned)
  MLIPModelSet *model_set;    // the first model drives the dynamics, the others: committee
  MLIPGraphBuilder *graph_builder;
  MLIPCommittee *committee;
  MLIPGammaMonitor *gamma_monitor;
  MLIPFeatureExchange *feature_exchange;    // message passing: ghost features between layers
  MLIPResult drive;            // driving model's output on the last graph (model units)
  MLIPAtomRows *exchanging;    // helper whose rows the running reverse communication carries

  // atoms with 1-2, 1-3, 1-4 special neighbours, summed over ranks (init_style)
  int special_atoms[3];

  void allocate();
  int resolve_threads(const char *text);
  void count_special_pairs();
  void check_special_bonds();
  void open_models();
  void tally(const MLIPResult &);
  void evaluate_committee();
};

}    // namespace LAMMPS_NS

#endif
#endif
