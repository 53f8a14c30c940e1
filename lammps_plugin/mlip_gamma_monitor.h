/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: extrapolation grade gamma, its thresholds and the
   selection file.

   Why a class of its own: gamma (MaxVol grade of the exports that carry an
   active set, docs/CONTRACT.md) is evaluated on demand, at most once per
   graph, by three clients (the style's gamma_every, compute mlip/gamma and
   fix pair), and each fresh evaluation applies the thresholds: gamma_select
   appends the configuration to an extended-XYZ file (gathered on rank 0),
   gamma_break stops the run. None of that is needed to compute forces.

   gamma_i of a committee is the element-wise maximum over the models with an
   active set; atoms of types not handled by the style have gamma = 0. All
   public calls except the accessors are collective (every rank must make
   them on the same step).
------------------------------------------------------------------------- */

#ifndef LMP_MLIP_GAMMA_MONITOR_H
#define LMP_MLIP_GAMMA_MONITOR_H

#include "mlip_graph_builder.h"

#include <string>

namespace LAMMPS_NS {

class MLIPGammaMonitor : protected Pointers {
 public:
  explicit MLIPGammaMonitor(class LAMMPS *);
  ~MLIPGammaMonitor() override;

  // pair_style keywords gamma_every / gamma_select G FILE / gamma_break (<= 0: off);
  // gamma_every defaults to 1 when a threshold is given. Starts a new selection file.
  void configure(int every, bool every_given, double select, const std::string &file,
                 double brk);
  // any gamma keyword given (then a model must carry an active set)
  bool requested() const { return every > 0 || select > 0.0 || brk > 0.0; }
  int every_steps() const { return every; }
  double select_threshold() const { return select; }
  const std::string &select_path() const { return select_file; }
  double break_threshold() const { return brk; }

  // evaluate on this step? (every gamma_every steps, or when fix pair set the trigger)
  bool due(bigint step) const;
  // fix pair ... gamma 1 sets this ("gamma_flag")
  int *trigger() { return &gamma_trigger; }

  // gamma on the graph of the last force call, once per graph; applies gamma_select /
  // gamma_break to a fresh evaluation. `who` names the caller in error messages;
  // type_element[type] is the element written for an atom type ("X": not handled).
  // api may be nullptr before the models are loaded (then this is an error: no active set).
  void evaluate(const char *who, const MLIPEngineAPI *api, const std::vector<MLIPModel> &models,
                MLIPGraphBuilder &graph, const std::vector<std::string> &type_element);

  // per-atom gamma of the local atoms, valid after evaluate() until the next force call
  // (nullptr before the first evaluation), and its maximum over all ranks
  double *atom_gamma() { return gamma_atom; }
  double *max_gamma() { return &gamma_global; }
  double memory_usage() const;

 private:
  int every;
  double select, brk;
  std::string select_file;
  bool select_started;      // select_file truncated already
  int gamma_trigger;
  long gamma_serial;        // graph serial gamma was evaluated for
  bigint checked_step;      // last step select/break were applied on
  double *gamma_atom;       // [nmax]
  int nmax;
  double gamma_global;
  std::vector<double> gamma_buf;

  void check_thresholds(bigint graph_step, const std::vector<std::string> &type_element);
  void write_selected(double gmax, const std::vector<std::string> &type_element);
};

}    // namespace LAMMPS_NS

#endif
