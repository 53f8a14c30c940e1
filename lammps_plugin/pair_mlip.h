/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: machine-learned interatomic potentials exported by the
   `mlip` Python package (TorchScript), evaluated by mlip's C++ engine.

   This file works both as part of the LAMMPS plugin (mlip_plugin.cpp) and
   copied into a LAMMPS source tree (src/), where the PairStyle() block below
   registers the style at compile time.

   The pair style never links libtorch: it dlopen()s libmlip_engine.so with
   RTLD_LOCAL | RTLD_DEEPBIND and calls the C ABI of docs/CONTRACT.md, so
   libtorch's BLAS calls bind to libtorch's own MKL and not to the reference
   BLAS that liblammps exports.

   Besides energies/forces/virials of one model it provides
     * the extrapolation grade gamma (exports with an active set): per-atom
       values and their maximum, gamma_select / gamma_break, compute mlip/gamma
       and `fix pair` fields (see lammps_plugin/README.md);
     * a committee of models (first model drives the dynamics): DeePMD-kit-like
       model-deviation file every out_freq steps.
------------------------------------------------------------------------- */

#ifdef PAIR_CLASS
// clang-format off
PairStyle(mlip,PairMLIP);
// clang-format on
#else

#ifndef LMP_PAIR_MLIP_H
#define LMP_PAIR_MLIP_H

#include "pair.h"

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace LAMMPS_NS {

struct MLIPEngineAPI;

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

  // ---- used by compute mlip/gamma (collective calls: every rank must make them)
  // true if at least one model of the style carries an active set
  bool has_grade() const { return n_graded > 0; }
  // evaluates gamma on the graph of the last force call (once per graph); `who` names the caller
  // in error messages. Applies gamma_select / gamma_break to a fresh evaluation.
  void ensure_gamma(const char *who);
  // step of the last force call (the graph gamma is evaluated on)
  bigint graph_timestep() const { return graph_step; }
  // per-atom gamma of the local atoms (0 for atoms not handled by this style), valid after
  // ensure_gamma() until the next force call; and its maximum over all ranks
  const double *atom_gamma() const { return gamma_atom; }
  double gamma_max() const { return gamma_global; }
  // configurations written by gamma_select so far
  int selected_count() const { return n_selected; }

 protected:
  // one exported model (the first drives the dynamics, the others form a committee)
  struct Model {
    std::string path;
    void *engine = nullptr;    // mlip_engine*
    double cutoff = 0.0, cutsq = 0.0, interaction_range = 0.0;
    std::string family;
    bool graded = false;                    // export carries an active set
    bool filtered = false;                  // cutoff < graph cutoff: own edge subset
    std::vector<int64_t> edge_i, edge_j;    // own edges when filtered (rebuilt lazily)
    std::vector<double> edge_vec;
    long edges_serial = -1;                 // graph_serial the own edges belong to
  };

  void allocate();
  void close_engines();
  void check_units();
  void parse_settings(int, char **, std::vector<std::string> &);
  void model_edges(int m, const int64_t *&ei, const int64_t *&ej, const double *&ev, int64_t &ne);
  void grow_peratom();
  void evaluate_committee();
  void check_gamma_thresholds();
  void write_selected(double gmax);

  const MLIPEngineAPI *api;    // function table of libmlip_engine.so (process-wide)
  std::vector<Model> models;
  int num_threads;
  double model_cutoff, model_cutsq;    // graph cutoff = largest cutoff of the models
  double interaction_range;            // largest interaction range of the models
  bool message_passing;        // interaction_range > cutoff: edges from ghost centres too
  double energy_scale;         // model energy unit -> LAMMPS energy unit
  std::vector<std::string> model_species;
  std::vector<int> type2species;    // [ntypes+1], -1 = NULL (not handled by this style)
  int n_graded;                     // models with an active set

  // per-step work arrays, kept between steps to avoid reallocation
  std::vector<int> node_of;         // LAMMPS atom index -> graph node (-1: not a node)
  std::vector<int> atom_of;         // graph node -> LAMMPS atom index
  std::vector<int> node_of_tag;     // atom tag -> node of the owned atom with that tag (-1: none)
  std::vector<int64_t> species, edge_i, edge_j;
  std::vector<double> edge_vec, edge_rsq, atom_energy, forces, atom_virial;
  int64_t graph_nlocal;             // local nodes of the last graph
  long graph_serial;                // incremented by every force call
  bigint graph_step;                // timestep of the last force call
  double energy0;                   // driving model: energy of the local nodes (model units)
  double virial0[9];                // driving model: virial of this rank's graph (model units)

  // extrapolation grade
  int gamma_every;                  // evaluate gamma every N steps in compute() (0: on demand)
  double gamma_select, gamma_break;    // thresholds (<= 0: off)
  std::string select_file;
  bool select_started;              // select_file truncated already
  int gamma_trigger;                // set by fix pair ("gamma_flag")
  long gamma_serial;                // graph_serial gamma was evaluated for
  bigint checked_step;              // last step select/break were applied on
  double *gamma_atom;               // [nmax]
  double gamma_global;
  int n_selected;
  std::vector<double> gamma_buf;

  // committee
  int out_freq;
  std::string out_file;
  FILE *devi_fp;
  int devi_trigger;                 // set by fix pair ("fdevi_flag")
  bigint devi_step;                 // last step the committee was evaluated on
  double *fdevi_atom;               // [nmax] per-atom force deviation
  int nmax_peratom;
  std::vector<double> fbuf;         // [nall * 3M] per-model forces, reverse-communicated
  int comm_models;                  // models in fbuf (for pack/unpack)
};

}    // namespace LAMMPS_NS

#endif
#endif
