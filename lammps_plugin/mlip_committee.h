/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: model deviation of a committee of models.

   Why a class of its own: with two or more models the first drives the
   dynamics and the others only measure how much the committee disagrees
   (DeePMD-kit's model_devi, used by active learning to pick configurations).
   That needs every model's force on every owned atom, i.e. one extra
   reverse communication, MPI reductions and a file written by rank 0: state
   and collective steps that the force call itself does not need.

   Protocol, on a step where due() is true (the same decision on every rank):
     gather_forces()  evaluates models 1..M-1 on the current graph and puts
                      each model's node forces on per-atom rows [nall][3 M]
                      (model 0's from the force call that just ran);
     (the pair style reverse-communicates the rows: this class is an
      MLIPAtomRows, so ghost contributions are summed onto their owners);
     finish()         takes the deviations, reduces them over the ranks and,
                      every out_freq steps, appends one line to out_file.
   Definitions (the ASE calculator's, mlip.calculator.committee_deviation;
   DeePMD-kit's model_devi): M models, N atoms handled by this style,
     eps_F,i = sqrt( mean_m |F_i^m - <F_i>|^2 )        per atom
     max/min/avg_devi_f = max/min/mean over atoms of eps_F,i
     sigma_W[ab] = sqrt( mean_m (W^m_ab - <W_ab>)^2 ) / N   (9 components)
     max/min_devi_v = max/min over the 9 components, avg_devi_v = |sigma_W|_F / 3
     devi_e = sqrt( mean_m (E^m - <E>)^2 ) / N
------------------------------------------------------------------------- */

#ifndef LMP_MLIP_COMMITTEE_H
#define LMP_MLIP_COMMITTEE_H

#include "mlip_graph_builder.h"

#include <cstdio>
#include <string>

namespace LAMMPS_NS {

class MLIPCommittee : protected Pointers, public MLIPAtomRows {
 public:
  explicit MLIPCommittee(class LAMMPS *);
  ~MLIPCommittee() override;

  // pair_style keywords out_freq / out_file; also starts a new deviation file
  void configure(int out_freq, const std::string &out_file);
  int output_every() const { return out_freq; }
  const std::string &output_file() const { return out_file; }

  // evaluate on this step? (every out_freq steps, or when fix pair set the trigger)
  bool due(bigint step) const;
  // fix pair ... fdevi 1 sets this ("fdevi_flag")
  int *trigger() { return &fdevi_trigger; }

  // step 1: every model's node forces (energy_scale: model -> LAMMPS units) onto the
  // per-atom rows; `first` is the driving model's result on the same graph
  void gather_forces(const MLIPEngineAPI &api, const std::vector<MLIPModel> &models,
                     MLIPGraphBuilder &graph, const MLIPResult &first, double energy_scale);
  // step 3 (after the reverse communication of the rows): deviations, reductions, file
  void finish(const std::vector<int> &type2species);

  // per-atom force deviation of the local atoms (0 for types not handled), nullptr before
  // the first evaluation
  double *atom_deviation() { return fdevi_atom; }

  int pack_reverse(int n, int first, double *buf) override;
  void unpack_reverse(int n, const int *list, const double *buf) override;
  double memory_usage() const;

 private:
  int out_freq;
  std::string out_file;
  FILE *fp;
  int fdevi_trigger;
  bigint last_step;             // last step the committee was evaluated on
  int nmodels;                  // models in rows (stride 3 M)
  std::vector<double> rows;     // [nall][3 M] per-model forces (LAMMPS units)
  std::vector<double> ew;       // [M] energies, then [M][9] virials of this rank
  MLIPResult scratch;           // output of models 1..M-1
  double *fdevi_atom;           // [nmax]
  int nmax;

  void write_line(bigint step, const std::vector<double> &ew_all, double fmax, double fmin,
                  double favg, double natoms);
};

}    // namespace LAMMPS_NS

#endif
