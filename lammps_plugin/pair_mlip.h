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

 protected:
  void allocate();
  void close_engine();
  void check_units();

  const MLIPEngineAPI *api;    // function table of libmlip_engine.so (process-wide)
  void *engine;                // mlip_engine* of the loaded model
  std::string model_path;
  int num_threads;
  double model_cutoff, model_cutsq, interaction_range;
  bool message_passing;        // interaction_range > cutoff: edges from ghost centres too
  double energy_scale;         // model energy unit -> LAMMPS energy unit
  std::vector<std::string> model_species;
  std::vector<int> type2species;    // [ntypes+1], -1 = NULL (not handled by this style)

  // per-step work arrays, kept between steps to avoid reallocation
  std::vector<int> node_of;         // LAMMPS atom index -> graph node (-1: not a node)
  std::vector<int> atom_of;         // graph node -> LAMMPS atom index
  std::vector<int> node_of_tag;     // atom tag -> node of the owned atom with that tag (-1: none)
  std::vector<int64_t> species, edge_i, edge_j;
  std::vector<double> edge_vec, atom_energy, forces, atom_virial;
};

}    // namespace LAMMPS_NS

#endif
#endif
