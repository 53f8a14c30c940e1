/* -*- c++ -*- ----------------------------------------------------------
   compute ID group mlip/gamma

   Extrapolation grade of pair_style mlip (models exported with an active
   set): global scalar = max gamma over the atoms of the group, per-atom
   vector = gamma of each atom (0 outside the group and for atom types not
   handled by mlip). Evaluated on demand, on the graph of the force call of
   the current step (once per step, shared with the pair style's own
   gamma_every / gamma_select / gamma_break). See lammps_plugin/README.md.
------------------------------------------------------------------------- */

#ifdef COMPUTE_CLASS
// clang-format off
ComputeStyle(mlip/gamma,ComputeMLIPGamma);
// clang-format on
#else

#ifndef LMP_COMPUTE_MLIP_GAMMA_H
#define LMP_COMPUTE_MLIP_GAMMA_H

#include "compute.h"

namespace LAMMPS_NS {

class ComputeMLIPGamma : public Compute {
 public:
  ComputeMLIPGamma(class LAMMPS *, int, char **);
  ~ComputeMLIPGamma() override;
  void init() override;
  double compute_scalar() override;
  void compute_peratom() override;
  double memory_usage() override;

 private:
  class PairMLIP *pair;
  int nmax;
  double *gamma;
  class PairMLIP *find_pair();
  void evaluate(const char *what);
};

}    // namespace LAMMPS_NS

#endif
#endif
