/* ----------------------------------------------------------------------
   pair_style mlip: opening the models of a pair_style and checking that
   they form one committee (see mlip_model_set.h for why).
------------------------------------------------------------------------- */

#include "mlip_model_set.h"

#include "comm.h"
#include "error.h"
#include "update.h"
#include "utils.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <algorithm>

using namespace LAMMPS_NS;

namespace {

// 1 eV in kcal/mol, the value LAMMPS itself uses to convert metal <-> real
constexpr double KCAL_PER_MOL_PER_EV = 23.060549;

std::string joined(const std::vector<std::string> &words)
{
  std::string out;
  for (const auto &w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}    // namespace

double LAMMPS_NS::mlip_ev_per_energy_unit(const std::string &style)
{
  if (style == "metal") return 1.0;
  if (style == "real") return 1.0 / KCAL_PER_MOL_PER_EV;
  return 0.0;
}

/* ---------------------------------------------------------------------- */

MLIPModelSet::MLIPModelSet(LAMMPS *lmp) :
    Pointers(lmp), engine_api(nullptr), graph_cutoff(0.0), range(0.0), mp(false), use_exchange(false), width(0), n_graded(0),
    ready(false)
{
}

MLIPModelSet::~MLIPModelSet()
{
  close();
}

void MLIPModelSet::close()
{
  for (auto &m : list)
    if (m.engine && engine_api) engine_api->close(m.engine);
  list.clear();
  ready = false;
}

void MLIPModelSet::open(const std::vector<std::string> &files, int num_threads)
{
  close();
  std::string err;
  engine_api = mlip_load_engine_api(err);
  if (!engine_api) error->all(FLERR, "pair_style mlip: {}", err);

  for (const auto &file : files) list.push_back(open_one(file, num_threads));

  model_species.clear();
  for (size_t m = 0; m < list.size(); m++) {
    std::vector<std::string> sp;
    const int n = engine_api->num_species(list[m].engine);
    for (int k = 0; k < n; k++) sp.emplace_back(engine_api->species(list[m].engine, k));
    if (m == 0) model_species = sp;
    if (sp != model_species)
      error->all(FLERR, "pair_style mlip: committee models must have the same species in the "
                        "same order: '{}' has [{}], '{}' has [{}]",
                 list[0].path, joined(model_species), list[m].path, joined(sp));
  }

  // one graph for all models: the largest cutoff and interaction range
  graph_cutoff = 0.0;
  range = 0.0;
  n_graded = 0;
  for (const auto &m : list) {
    graph_cutoff = std::max(graph_cutoff, m.cutoff);
    range = std::max(range, m.interaction_range);
    if (m.graded) n_graded++;
  }
  mp = range > graph_cutoff * (1.0 + 1e-12);
  for (const auto &m : list)
    if (m.message_passing) mp = true;
  if (mp) range = std::max(range, graph_cutoff);
  // message passing on a one-cutoff graph when every message-passing model has the layer split
  // (MLIP_LAMMPS_EXCHANGE=0 keeps the deep ghost shell, e.g. to compare the two)
  const char *env = getenv("MLIP_LAMMPS_EXCHANGE");
  const bool allowed = !(env && strcmp(env, "0") == 0);
  use_exchange = mp && allowed;
  width = 0;
  for (const auto &m : list) {
    if (m.message_passing && !m.layered) use_exchange = false;
    width = std::max(width, m.exchange_width);
  }
  energy_scale();    // unsupported or mixed units: an error now, and the set stays unloaded
  ready = true;
}

// one model on every rank; the same outcome everywhere or an error naming the model
MLIPModel MLIPModelSet::open_one(const std::string &file, int num_threads)
{
  // utils::open_potential semantics for a binary file: as given, else in $LAMMPS_POTENTIALS;
  // a file found nowhere is handed to the engine as given, which names it in its message
  std::string path = utils::get_potential_file_path(file);
  if (path.empty()) path = file;

  char msg[MLIP_ERRLEN] = {0};
  void *eng = engine_api->open(path.c_str(), num_threads, msg, MLIP_ERRLEN);
  int ok = eng ? 1 : 0, all_ok = 0, any_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, world);
  MPI_Allreduce(&ok, &any_ok, 1, MPI_INT, MPI_MAX, world);
  if (!any_ok) error->all(FLERR, "pair_style mlip: cannot load model '{}': {}", path, msg);
  if (!ok) error->one(FLERR, "pair_style mlip: cannot load model '{}': {}", path, msg);
  if (!all_ok)
    error->all(FLERR, "pair_style mlip: model '{}' failed to load on another rank", path);

  MLIPModel m;
  m.path = path;
  m.engine = eng;
  m.cutoff = engine_api->cutoff(eng);
  m.interaction_range = engine_api->interaction_range(eng);
  const char *fam = engine_api->family(eng);
  m.family = fam ? fam : "";
  m.graded = engine_api->has_grade && engine_api->has_grade(eng) == 1;
  m.message_passing = m.interaction_range > m.cutoff * (1.0 + 1e-12);
  m.layered = engine_api->supports_exchange && engine_api->supports_exchange(eng) == 1;
  m.exchange_width = m.layered ? engine_api->exchange_width(eng) : 0;
  return m;
}

double MLIPModelSet::energy_scale() const
{
  double lammps_ev = mlip_ev_per_energy_unit(update->unit_style);
  if (lammps_ev == 0.0)
    error->all(FLERR, "pair_style mlip does not support 'units {}': use 'units metal' (the "
                      "models' native eV/Angstrom) or 'units real' (converted)",
               update->unit_style);
  double first = 0.0;
  for (const auto &m : list) {
    const char *model_units = engine_api->units(m.engine);
    double model_ev = mlip_ev_per_energy_unit(model_units ? model_units : "");
    if (model_ev == 0.0)
      error->all(FLERR, "pair_style mlip: model '{}' declares units '{}', which are not supported "
                        "(only metal and real)", m.path, model_units ? model_units : "");
    if (first == 0.0) first = model_ev;
    if (model_ev != first)
      error->all(FLERR, "pair_style mlip: committee models must use the same units ('{}' "
                        "differs from '{}')", m.path, list[0].path);
  }
  // lengths are Angstrom in both metal and real; only energies are scaled
  return first / lammps_ev;
}

/* ---------------------------------------------------------------------- */

void MLIPModelSet::log(int num_threads) const
{
  const int nmodels = (int) list.size();
  if (comm->me == 0) {
    const std::string sp = joined(model_species);
    for (int m = 0; m < nmodels; m++) {
      const MLIPModel &md = list[m];
      utils::logmesg(lmp,
                     "pair_style mlip: {}model '{}' ({}, species {}), cutoff {} A, interaction "
                     "range {} A{}\n",
                     nmodels > 1 ? (m == 0 ? "committee model 0 (drives the dynamics): "
                                           : fmt::format("committee model {}: ", m))
                                 : "",
                     md.path, md.family, sp, md.cutoff, md.interaction_range,
                     md.graded ? ", active set (extrapolation grade)" : "");
    }
    utils::logmesg(lmp, "pair_style mlip: graph cutoff {} A{}, {} libtorch thread(s) per MPI rank, "
                        "engine {}\n",
                   graph_cutoff,
                   !mp ? ""
                       : use_exchange ? " (message passing: ghost shell of one cutoff, features "
                                        "exchanged between layers)"
                                      : " (message passing: ghost neighbours)",
                   num_threads, engine_api->path);
    if (mp && !use_exchange) {
      std::string why;
      for (const auto &m : list)
        if (m.message_passing && !m.layered) why = fmt::format("model '{}' has no layer split", m.path);
      if (why.empty()) why = "MLIP_LAMMPS_EXCHANGE=0";
      utils::logmesg(lmp, "pair_style mlip: message passing on a deep ghost shell (interaction range "
                          "{} A + skin): {}\n", range, why);
    }
  }
}

void MLIPModelSet::check_threads(int num_threads) const
{
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  int ranks_on_node = 1;
  MPI_Comm_size(node, &ranks_on_node);
  MPI_Comm_free(&node);
  long ncores = sysconf(_SC_NPROCESSORS_ONLN);
  if (comm->me == 0 && ncores > 0 && (long) ranks_on_node * num_threads > ncores)
    error->warning(FLERR,
                   "pair_style mlip: {} MPI ranks x {} libtorch threads on a node with {} cores "
                   "oversubscribes the CPU; lower 'threads' / MLIP_NUM_THREADS",
                   ranks_on_node, num_threads, ncores);
}
