/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: the models of one pair_style, opened through the engine.

   Why a class of its own: opening a model is a collective step with rules
   that have nothing to do with LAMMPS' pair interface. Every rank must get
   the same outcome (or one error naming the model); files are found the way
   utils::open_potential finds potential files (as given, else in
   $LAMMPS_POTENTIALS); the models of a committee must agree on species and
   units; and together they decide the graph (largest cutoff, largest
   interaction range, ghost centres for message passing). The first model
   drives the dynamics, the others form a committee.
------------------------------------------------------------------------- */

#ifndef LMP_MLIP_MODEL_SET_H
#define LMP_MLIP_MODEL_SET_H

#include "mlip_engine_api.h"
#include "pointers.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class MLIPModelSet : protected Pointers {
 public:
  explicit MLIPModelSet(class LAMMPS *);
  ~MLIPModelSet() override;

  // Loads the engine and opens `files` with `num_threads` libtorch threads each (collective;
  // a LAMMPS error on any failure). Replaces the models opened before.
  void open(const std::vector<std::string> &files, int num_threads);
  void close();
  bool loaded() const { return ready; }

  const MLIPEngineAPI *api() const { return engine_api; }
  const std::vector<MLIPModel> &models() const { return list; }
  int size() const { return (int) list.size(); }
  const MLIPModel &driver() const { return list[0]; }
  // species of the models (the same for all, in the same order)
  const std::vector<std::string> &species() const { return model_species; }
  // graph cutoff (largest model cutoff) and largest interaction range
  double cutoff() const { return graph_cutoff; }
  double interaction_range() const { return range; }
  // some model's features reach beyond its cutoff: ghost centres need edges too
  bool message_passing() const { return mp; }
  // message passing on a one-cutoff ghost shell with per-layer feature exchange (every
  // message-passing model has the layer split); else the ghost shell is interaction_range deep
  bool exchange() const { return use_exchange; }
  // widest feature row exchanged per atom (comm_forward / comm_reverse)
  int64_t exchange_width() const { return width; }
  int num_graded() const { return n_graded; }
  // model energy unit -> energy unit of the current LAMMPS `units` (errors for unsupported or
  // mixed units)
  double energy_scale() const;

  // rank 0 logs one line per model and one for the graph
  void log(int num_threads) const;
  // warns when MPI ranks on a node x libtorch threads exceed its cores (collective)
  void check_threads(int num_threads) const;

 private:
  const MLIPEngineAPI *engine_api;
  std::vector<MLIPModel> list;
  std::vector<std::string> model_species;
  double graph_cutoff, range;
  bool mp, use_exchange;
  int64_t width;
  int n_graded;
  bool ready;

  MLIPModel open_one(const std::string &file, int num_threads);
};

// energy of one unit of LAMMPS unit style `style` in eV; 0 if pair_style mlip does not support it
double mlip_ev_per_energy_unit(const std::string &style);

}    // namespace LAMMPS_NS

#endif
