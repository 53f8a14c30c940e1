/* A minimal LAMMPS executable with pair_style mlip compiled in (no plugin).

   In a LAMMPS source tree, the PairStyle(mlip,PairMLIP) block of pair_mlip.h
   (and ComputeStyle(mlip/gamma,...) of compute_mlip_gamma.h) makes LAMMPS'
   build system add the styles to style_pair.h / style_compute.h, which fill
   Force::pair_map and Modify::compute_map. Here the same map entries are added by hand, so this program
   behaves like a custom LAMMPS build that contains the style sources
   (pair_mlip.cpp, the mlip_*.cpp helpers it owns, compute_mlip_gamma.cpp):
   it is how the copy-in route is tested against the headers and library of
   the wheel. Link it with those sources (CMake: MLIP_STYLE_SOURCES).

   usage: lmp_mlip_builtin -in in.script [other lmp options] */

#include "compute_mlip_gamma.h"
#include "exceptions.h"
#include "force.h"
#include "input.h"
#include "lammps.h"
#include "modify.h"
#include "pair_mlip.h"

#include <mpi.h>

using namespace LAMMPS_NS;

static Pair *mlip_creator(LAMMPS *lmp) { return new PairMLIP(lmp); }
static Compute *mlip_gamma_creator(LAMMPS *lmp, int narg, char **arg)
{
  return new ComputeMLIPGamma(lmp, narg, arg);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rc = 0;
  try {
    auto *lmp = new LAMMPS(argc, argv, MPI_COMM_WORLD);
    (*lmp->force->pair_map)["mlip"] = &mlip_creator;
    (*lmp->modify->compute_map)["mlip/gamma"] = &mlip_gamma_creator;
    lmp->input->file();
    delete lmp;
  } catch (LAMMPSAbortException &ae) {
    MPI_Abort(ae.get_universe(), 1);
  } catch (LAMMPSException &) {
    rc = 1;    // the message was already printed by LAMMPS' Error class
  }
  MPI_Finalize();
  return rc;
}
