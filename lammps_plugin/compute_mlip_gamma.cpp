/* ----------------------------------------------------------------------
   compute mlip/gamma  (see compute_mlip_gamma.h and lammps_plugin/README.md)
------------------------------------------------------------------------- */

#include "compute_mlip_gamma.h"

#include "atom.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "pair_mlip.h"
#include "update.h"

#include <algorithm>

using namespace LAMMPS_NS;

ComputeMLIPGamma::ComputeMLIPGamma(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), pair(nullptr), nmax(0), gamma(nullptr)
{
  if (narg != 3)
    error->all(FLERR, "Illegal compute mlip/gamma command: expected 'compute ID group-ID "
                      "mlip/gamma' (no arguments)");
  scalar_flag = 1;
  extscalar = 0;
  peratom_flag = 1;
  size_peratom_cols = 0;
  // gamma depends on the positions of the current step only
  timeflag = 0;
}

ComputeMLIPGamma::~ComputeMLIPGamma()
{
  memory->destroy(gamma);
}

PairMLIP *ComputeMLIPGamma::find_pair()
{
  // the one pair style mlip (also as a sub-style of pair_style hybrid/overlay)
  Pair *p = force->pair_match("mlip", 1, 0);
  if (!p)
    error->all(FLERR, "compute mlip/gamma needs exactly one pair_style mlip (alone or inside "
                      "pair_style hybrid)");
  auto *pm = dynamic_cast<PairMLIP *>(p);
  if (!pm) error->all(FLERR, "compute mlip/gamma: pair style 'mlip' is not mlip's PairMLIP");
  return pm;
}

void ComputeMLIPGamma::init()
{
  pair = find_pair();
  if (!pair->has_grade())
    error->all(FLERR, "compute mlip/gamma: no model of pair_style mlip carries an active set "
                      "(export the model with one to get the extrapolation grade)");
}

void ComputeMLIPGamma::evaluate(const char *what)
{
  if (!pair) pair = find_pair();
  if (pair->graph_timestep() != update->ntimestep)
    error->all(FLERR, "compute mlip/gamma: the {} is requested on step {} but pair_style mlip "
                      "last computed forces on step {}; gamma is evaluated on the graph of the "
                      "current step's force call", what, update->ntimestep,
               pair->graph_timestep());
  pair->ensure_gamma("compute mlip/gamma");
}

double ComputeMLIPGamma::compute_scalar()
{
  invoked_scalar = update->ntimestep;
  evaluate("maximum");
  if (igroup == 0) {
    scalar = pair->gamma_max();    // group all: the pair style's own reduction
  } else {
    const double *g = pair->atom_gamma();
    int *mask = atom->mask;
    double mine = 0.0;
    for (int i = 0; i < atom->nlocal; i++)
      if (mask[i] & groupbit) mine = std::max(mine, g[i]);
    MPI_Allreduce(&mine, &scalar, 1, MPI_DOUBLE, MPI_MAX, world);
  }
  return scalar;
}

void ComputeMLIPGamma::compute_peratom()
{
  invoked_peratom = update->ntimestep;
  evaluate("per-atom value");
  if (atom->nmax > nmax) {
    memory->destroy(gamma);
    nmax = atom->nmax;
    memory->create(gamma, nmax, "mlip/gamma:gamma");
    vector_atom = gamma;
  }
  const double *g = pair->atom_gamma();
  int *mask = atom->mask;
  for (int i = 0; i < atom->nlocal; i++) gamma[i] = (mask[i] & groupbit) ? g[i] : 0.0;
}

double ComputeMLIPGamma::memory_usage()
{
  return (double) nmax * sizeof(double);
}
