/* ----------------------------------------------------------------------
   pair_style mlip  (see pair_mlip.h and lammps_plugin/README.md)

   Graph handed to the engine (docs/CONTRACT.md):
     nodes  = local atoms of the neighbour list first (n_local of them), then
              every ghost atom that is a neighbour (or, for message-passing
              models, a ghost centre); LAMMPS ghosts are separate nodes, so
              edge_vec = x[j] - x[i] directly, no image shifts.
     edges  = (i -> j) for |x[j]-x[i]| < cutoff from the full neighbour list;
              only local centres for local models, local + ghost centres for
              message-passing models (ghost neighbour list, comm cutoff =
              interaction_range + skin).
   Forces and per-atom virials of ghost nodes are added to the ghost atoms and
   reverse-communicated by LAMMPS (newton_pair on is required).

   Several models (a committee): the graph is built once with the largest
   cutoff (and interaction range); each model gets the edges shorter than its
   own cutoff, in the same order. The first model drives the dynamics; on
   model-deviation steps every model is evaluated, its node forces are put on
   a per-atom buffer [nall][3 M] that is reverse-communicated (so the force of
   every owned atom is complete for every model) before the deviations are
   taken. The extrapolation grade is evaluated on the same graph (n_local
   values per rank), its maximum reduced with MPI_Allreduce.
------------------------------------------------------------------------- */

#include "pair_mlip.h"

#include "atom.h"
#include "domain.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <dlfcn.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unistd.h>

using namespace LAMMPS_NS;

/* ----------------------------------------------------------------------
   C ABI of libmlip_engine.so (cpp/mlip_c_api.h, docs/CONTRACT.md), resolved
   with dlsym so that this file compiles without mlip's or torch's headers.
------------------------------------------------------------------------- */

namespace LAMMPS_NS {
struct MLIPEngineAPI {
  void *handle = nullptr;
  std::string path;
  void *(*open)(const char *, int, char *, int) = nullptr;
  void (*close)(void *) = nullptr;
  int (*num_species)(const void *) = nullptr;
  const char *(*species)(const void *, int) = nullptr;
  double (*cutoff)(const void *) = nullptr;
  double (*interaction_range)(const void *) = nullptr;
  const char *(*family)(const void *) = nullptr;
  const char *(*units)(const void *) = nullptr;
  int (*compute)(void *, int64_t, int64_t, const int64_t *, int64_t, const int64_t *,
                 const int64_t *, const double *, double *, double *, double *, double *, double *,
                 char *, int) = nullptr;
  // C API version 2 (extrapolation grade); nullptr with an older engine
  int (*has_grade)(const void *) = nullptr;
  int (*grade)(void *, int64_t, int64_t, const int64_t *, int64_t, const int64_t *,
               const int64_t *, const double *, double *, char *, int) = nullptr;
};
}    // namespace LAMMPS_NS

namespace {

constexpr int ERRLEN = 2048;

// 1 eV in kcal/mol, the value LAMMPS itself uses to convert metal <-> real
constexpr double KCAL_PER_MOL_PER_EV = 23.060549;

// energy of one unit of `style` in eV; 0 if the style is not supported
double ev_per_energy_unit(const std::string &style)
{
  if (style == "metal") return 1.0;
  if (style == "real") return 1.0 / KCAL_PER_MOL_PER_EV;
  return 0.0;
}

std::string dirname_of(const std::string &path)
{
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  return path.substr(0, pos);
}

bool file_exists(const std::string &path)
{
  return !path.empty() && access(path.c_str(), R_OK) == 0;
}

// directory of the shared object that contains this code (the plugin, or
// liblammps / lmp itself when the style is compiled into LAMMPS)
std::string own_directory()
{
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&own_directory), &info) && info.dli_fname) {
    char *real = realpath(info.dli_fname, nullptr);
    std::string out = dirname_of(real ? real : info.dli_fname);
    free(real);
    return out;
  }
  return "";
}

std::vector<std::string> engine_candidates()
{
  static const char *name = "libmlip_engine.so";
  std::vector<std::string> out;
  const char *env = getenv("MLIP_ENGINE_LIBRARY");
  if (env && *env) {
    out.emplace_back(env);
    return out;    // an explicit choice is never silently replaced
  }
  std::string here = own_directory();
  if (!here.empty()) {
    // plugin installed in <site-packages>/mlip/lib next to the engine, or in a build tree
    for (const char *sub : {"", "/lib", "/../lib", "/../mlip/lib", "/../cpp", "/../../cpp"})
      out.push_back(here + sub + "/" + name);
  }
#ifdef MLIP_ENGINE_DEFAULT_PATH
  out.emplace_back(MLIP_ENGINE_DEFAULT_PATH);
#endif
  return out;
}

std::mutex api_mutex;
MLIPEngineAPI api_table;
std::string api_error;

template <typename F> bool bind(void *handle, F &fn, const char *symbol, std::string &missing)
{
  fn = reinterpret_cast<F>(dlsym(handle, symbol));
  if (!fn) missing += std::string(missing.empty() ? "" : ", ") + symbol;
  return fn != nullptr;
}

// Loads libmlip_engine.so once per process. Returns nullptr with a message.
const MLIPEngineAPI *load_engine_api(std::string &err)
{
  std::lock_guard<std::mutex> lock(api_mutex);
  if (api_table.handle) return &api_table;

  std::string tried;
  void *handle = nullptr;
  std::string found;
  // MLIP_ENGINE_DEEPBIND=0 is a diagnostic switch only (benchmarks/bench_lammps.py uses it to
  // show what the BLAS clash costs); RTLD_DEEPBIND is the default.
  int flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
  const char *deep = getenv("MLIP_ENGINE_DEEPBIND");
  if (deep && strcmp(deep, "0") == 0) flags = RTLD_NOW | RTLD_LOCAL;
  for (const auto &cand : engine_candidates()) {
    if (!file_exists(cand)) {
      tried += "\n    " + cand + " (not found)";
      continue;
    }
    dlerror();
    // RTLD_DEEPBIND: libtorch (a dependency of the engine) resolves its BLAS
    // symbols inside its own scope first, not in liblammps' reference BLAS.
    handle = dlopen(cand.c_str(), flags);
    if (handle) {
      found = cand;
      break;
    }
    const char *e = dlerror();
    tried += "\n    " + cand + " (" + (e ? e : "dlopen failed") + ")";
  }
  if (!handle) {
    // last resort: the dynamic loader's search path (LD_LIBRARY_PATH)
    dlerror();
    handle = dlopen("libmlip_engine.so", flags);
    if (handle) {
      found = "libmlip_engine.so";
    } else {
      const char *e = dlerror();
      tried += std::string("\n    libmlip_engine.so via LD_LIBRARY_PATH (") +
          (e ? e : "dlopen failed") + ")";
    }
  }
  if (!handle) {
    err = "cannot load mlip's C++ engine libmlip_engine.so. Tried:" + tried +
        "\n  Install the mlip Python package (which ships it), or set MLIP_ENGINE_LIBRARY to its "
        "path:  export MLIP_ENGINE_LIBRARY=$(python -m mlip.lammps_support --engine)";
    return nullptr;
  }

  MLIPEngineAPI t;
  std::string missing;
  bind(handle, t.open, "mlip_engine_open", missing);
  bind(handle, t.close, "mlip_engine_close", missing);
  bind(handle, t.num_species, "mlip_engine_num_species", missing);
  bind(handle, t.species, "mlip_engine_species", missing);
  bind(handle, t.cutoff, "mlip_engine_cutoff", missing);
  bind(handle, t.interaction_range, "mlip_engine_interaction_range", missing);
  bind(handle, t.family, "mlip_engine_family", missing);
  bind(handle, t.units, "mlip_engine_units", missing);
  bind(handle, t.compute, "mlip_engine_compute", missing);
  if (!missing.empty()) {
    err = "'" + found + "' is not a compatible mlip engine (missing symbols: " + missing +
        "); the mlip package and the LAMMPS plugin come from different versions";
    dlclose(handle);
    return nullptr;
  }
  // optional (C API version 2): without them no model reports an extrapolation grade
  t.has_grade = reinterpret_cast<decltype(t.has_grade)>(dlsym(handle, "mlip_engine_has_grade"));
  t.grade = reinterpret_cast<decltype(t.grade)>(dlsym(handle, "mlip_engine_grade"));
  if (!t.has_grade || !t.grade) t.has_grade = nullptr, t.grade = nullptr;
  t.handle = handle;
  t.path = found;
  api_table = t;
  return &api_table;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairMLIP::PairMLIP(LAMMPS *lmp) :
    Pair(lmp), api(nullptr), num_threads(1), model_cutoff(0.0), model_cutsq(0.0),
    interaction_range(0.0), message_passing(false), energy_scale(1.0), n_graded(0),
    graph_nlocal(0), graph_serial(-1), graph_step(-1), energy0(0.0), gamma_every(0),
    gamma_select(0.0), gamma_break(0.0), select_started(false), gamma_trigger(0),
    gamma_serial(-1), checked_step(-1), gamma_atom(nullptr), gamma_global(0.0), n_selected(0),
    out_freq(0), out_file("model_devi.out"), devi_fp(nullptr), devi_trigger(0), devi_step(-1),
    fdevi_atom(nullptr), nmax_peratom(0), comm_models(0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the engine returns the global virial directly (W = -sum_e r_e (x) g_e)
  no_virial_fdotr_compute = 1;
  // per-atom virials are full 3x3 tensors: centroid stress is available
  centroidstressflag = CENTROID_AVAIL;
  for (double &v : virial0) v = 0.0;
}

PairMLIP::~PairMLIP()
{
  close_engines();
  if (devi_fp) fclose(devi_fp);
  memory->destroy(gamma_atom);
  memory->destroy(fdevi_atom);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    if (cutghost) memory->destroy(cutghost);
  }
}

void PairMLIP::close_engines()
{
  for (auto &m : models)
    if (m.engine && api) api->close(m.engine);
  models.clear();
}

/* ---------------------------------------------------------------------- */

void PairMLIP::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  type2species.assign(n, -1);
}

/* ----------------------------------------------------------------------
   pair_style mlip MODEL.pt [MODEL2.pt ...] [keyword value(s) ...]
     threads N
     out_freq N  out_file FILE                  (committee: 2 or more models)
     gamma_every N  gamma_select G FILE  gamma_break B
------------------------------------------------------------------------- */

namespace {
const char *USAGE = "expected 'pair_style mlip MODEL.pt [MODEL2.pt ...] [threads N] [out_freq N] "
                    "[out_file FILE] [gamma_every N] [gamma_select G FILE] [gamma_break B]'";

bool is_keyword(const char *s)
{
  for (const char *k : {"threads", "out_freq", "out_file", "gamma_every", "gamma_select",
                        "gamma_break"})
    if (strcmp(s, k) == 0) return true;
  return false;
}
}    // namespace

void PairMLIP::parse_settings(int narg, char **arg, std::vector<std::string> &paths)
{
  int iarg = 0;
  while (iarg < narg && !is_keyword(arg[iarg])) paths.emplace_back(arg[iarg++]);
  if (paths.empty()) error->all(FLERR, "Illegal pair_style mlip command: {}", USAGE);

  int threads = -1;
  bool every_given = false;
  out_freq = 0;
  out_file = "model_devi.out";
  gamma_every = 0;
  gamma_select = gamma_break = 0.0;
  select_file.clear();
  auto need = [&](int n) {
    if (iarg + n >= narg)
      error->all(FLERR, "pair_style mlip: keyword '{}' needs {} value(s); {}", arg[iarg], n,
                 USAGE);
  };
  while (iarg < narg) {
    const char *kw = arg[iarg];
    if (strcmp(kw, "threads") == 0) {
      need(1);
      threads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (threads < 1)
        error->all(FLERR, "pair_style mlip: 'threads' must be >= 1, got {}", arg[iarg + 1]);
      iarg += 2;
    } else if (strcmp(kw, "out_freq") == 0) {
      need(1);
      out_freq = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (out_freq < 0)
        error->all(FLERR, "pair_style mlip: 'out_freq' must be >= 0, got {}", arg[iarg + 1]);
      iarg += 2;
    } else if (strcmp(kw, "out_file") == 0) {
      need(1);
      out_file = arg[iarg + 1];
      iarg += 2;
    } else if (strcmp(kw, "gamma_every") == 0) {
      need(1);
      gamma_every = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (gamma_every < 1)
        error->all(FLERR, "pair_style mlip: 'gamma_every' must be >= 1, got {}", arg[iarg + 1]);
      every_given = true;
      iarg += 2;
    } else if (strcmp(kw, "gamma_select") == 0) {
      need(2);
      gamma_select = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      if (!(gamma_select > 0.0))
        error->all(FLERR, "pair_style mlip: 'gamma_select' threshold must be > 0, got {}",
                   arg[iarg + 1]);
      select_file = arg[iarg + 2];
      iarg += 3;
    } else if (strcmp(kw, "gamma_break") == 0) {
      need(1);
      gamma_break = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      if (!(gamma_break > 0.0))
        error->all(FLERR, "pair_style mlip: 'gamma_break' threshold must be > 0, got {}",
                   arg[iarg + 1]);
      iarg += 2;
    } else {
      error->all(FLERR, "pair_style mlip: unknown keyword '{}' (model files come first, then "
                        "keywords); {}", kw, USAGE);
    }
  }
  if (!every_given && (gamma_select > 0.0 || gamma_break > 0.0)) gamma_every = 1;

  if (threads < 0) {
    const char *env = getenv("MLIP_NUM_THREADS");
    if (env && *env) {
      threads = atoi(env);
      if (threads < 1)
        error->all(FLERR, "pair_style mlip: environment MLIP_NUM_THREADS='{}' is not an integer "
                          ">= 1", env);
    } else {
      threads = 1;    // one libtorch thread per MPI rank: never oversubscribes under mpirun
    }
  }
  num_threads = threads;
}

void PairMLIP::settings(int narg, char **arg)
{
  std::vector<std::string> paths;
  parse_settings(narg, arg, paths);

  // refuse unsupported LAMMPS units before the (slow) model load
  if (ev_per_energy_unit(update->unit_style) == 0.0)
    error->all(FLERR, "pair_style mlip does not support 'units {}': use 'units metal' (the "
                      "models' native eV/Angstrom) or 'units real' (converted)",
               update->unit_style);

  std::string err;
  api = load_engine_api(err);
  if (!api) error->all(FLERR, "pair_style mlip: {}", err);

  close_engines();
  if (devi_fp) fclose(devi_fp);
  devi_fp = nullptr;
  devi_step = -1;
  select_started = false;
  checked_step = -1;
  n_selected = 0;
  graph_serial = -1;
  gamma_serial = -1;
  graph_step = -1;

  for (const auto &path : paths) {
    char msg[ERRLEN] = {0};
    void *eng = api->open(path.c_str(), num_threads, msg, ERRLEN);
    int ok = eng ? 1 : 0, all_ok = 0, any_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, world);
    MPI_Allreduce(&ok, &any_ok, 1, MPI_INT, MPI_MAX, world);
    if (!any_ok) error->all(FLERR, "pair_style mlip: cannot load model '{}': {}", path, msg);
    if (!ok) error->one(FLERR, "pair_style mlip: cannot load model '{}': {}", path, msg);
    if (!all_ok)
      error->all(FLERR, "pair_style mlip: model '{}' failed to load on another rank", path);
    Model m;
    m.path = path;
    m.engine = eng;
    m.cutoff = api->cutoff(eng);
    m.cutsq = m.cutoff * m.cutoff;
    m.interaction_range = api->interaction_range(eng);
    const char *fam = api->family(eng);
    m.family = fam ? fam : "";
    m.graded = api->has_grade && api->has_grade(eng) == 1;
    models.push_back(std::move(m));
  }

  model_species.clear();
  int ns = api->num_species(models[0].engine);
  for (int k = 0; k < ns; k++) model_species.emplace_back(api->species(models[0].engine, k));
  for (size_t m = 1; m < models.size(); m++) {
    std::vector<std::string> sp;
    int n = api->num_species(models[m].engine);
    for (int k = 0; k < n; k++) sp.emplace_back(api->species(models[m].engine, k));
    if (sp != model_species) {
      std::string a, b;
      for (const auto &s : model_species) a += (a.empty() ? "" : " ") + s;
      for (const auto &s : sp) b += (b.empty() ? "" : " ") + s;
      error->all(FLERR, "pair_style mlip: committee models must have the same species in the "
                        "same order: '{}' has [{}], '{}' has [{}]",
                 models[0].path, a, models[m].path, b);
    }
  }

  model_cutoff = 0.0;
  interaction_range = 0.0;
  n_graded = 0;
  for (auto &m : models) {
    model_cutoff = std::max(model_cutoff, m.cutoff);
    interaction_range = std::max(interaction_range, m.interaction_range);
    if (m.graded) n_graded++;
  }
  model_cutsq = model_cutoff * model_cutoff;
  for (auto &m : models) m.filtered = m.cutsq < model_cutsq * (1.0 - 1e-12);
  message_passing = interaction_range > model_cutoff * (1.0 + 1e-12);
  for (auto &m : models)
    if (m.interaction_range > m.cutoff * (1.0 + 1e-12)) message_passing = true;
  if (message_passing) interaction_range = std::max(interaction_range, model_cutoff);
  ghostneigh = message_passing ? 1 : 0;

  const int nmodels = (int) models.size();
  comm_reverse = nmodels > 1 ? 3 * nmodels : 0;

  if ((gamma_every > 0 || gamma_select > 0.0 || gamma_break > 0.0) && n_graded == 0)
    error->all(FLERR, "pair_style mlip: gamma_every/gamma_select/gamma_break need a model "
                      "exported with an active set (extrapolation grade){}; none of the {} "
                      "model(s) has one",
               api->has_grade ? "" : " and an engine with C API version 2", nmodels);
  if (nmodels == 1 && out_freq > 0)
    error->all(FLERR, "pair_style mlip: 'out_freq' (model deviation) needs two or more models "
                      "(a committee), got one");

  check_units();

  if (comm->me == 0) {
    std::string sp;
    for (const auto &s : model_species) sp += (sp.empty() ? "" : " ") + s;
    for (int m = 0; m < nmodels; m++) {
      const Model &md = models[m];
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
                   model_cutoff, message_passing ? " (message passing: ghost neighbours)" : "",
                   num_threads, api->path);
    if (nmodels > 1)
      utils::logmesg(lmp, "pair_style mlip: model deviation of {} models {}\n", nmodels,
                     out_freq > 0 ? fmt::format("every {} steps to '{}'", out_freq, out_file)
                                  : std::string("only on request (fix pair ... fdevi 1)"));
    if (gamma_every > 0)
      utils::logmesg(lmp, "pair_style mlip: extrapolation grade every {} steps{}{}\n",
                     gamma_every,
                     gamma_select > 0.0 ? fmt::format(", gamma > {} written to '{}'", gamma_select,
                                                      select_file)
                                        : std::string(),
                     gamma_break > 0.0 ? fmt::format(", run stops at gamma > {}", gamma_break)
                                       : std::string());
  }

  // warn about oversubscription: ranks on this node x threads > cores
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

  if (allocated) {
    // a new model may have other species: pair_coeff has to be given again
    int n = atom->ntypes;
    for (int i = 0; i <= n; i++)
      for (int j = 0; j <= n; j++) setflag[i][j] = 0;
    type2species.assign(n + 1, -1);
  }
}

void PairMLIP::check_units()
{
  double lammps_ev = ev_per_energy_unit(update->unit_style);
  if (lammps_ev == 0.0)
    error->all(FLERR, "pair_style mlip does not support 'units {}': use 'units metal' (the "
                      "models' native eV/Angstrom) or 'units real' (converted)",
               update->unit_style);
  double first = 0.0;
  for (const auto &m : models) {
    const char *model_units = api->units(m.engine);
    double model_ev = ev_per_energy_unit(model_units ? model_units : "");
    if (model_ev == 0.0)
      error->all(FLERR, "pair_style mlip: model '{}' declares units '{}', which are not supported "
                        "(only metal and real)", m.path, model_units ? model_units : "");
    if (first == 0.0) first = model_ev;
    if (model_ev != first)
      error->all(FLERR, "pair_style mlip: committee models must use the same units ('{}' "
                        "differs from '{}')", m.path, models[0].path);
  }
  // lengths are Angstrom in both metal and real; only energies are scaled
  energy_scale = first / lammps_ev;
}

/* ----------------------------------------------------------------------
   pair_coeff * * El1 El2 ... (one element name or NULL per atom type)
------------------------------------------------------------------------- */

void PairMLIP::coeff(int narg, char **arg)
{
  if (models.empty())
    error->all(FLERR, "pair_coeff for pair_style mlip before the model was loaded");
  if (!allocated) allocate();

  const std::string &model_path = models[0].path;
  int ntypes = atom->ntypes;
  std::string known;
  for (const auto &s : model_species) known += (known.empty() ? "" : " ") + s;
  if (narg != 2 + ntypes)
    error->all(FLERR,
               "pair_coeff for pair_style mlip needs '* *' followed by exactly {} element "
               "name(s), one per atom type (NULL for types handled by another pair style); got "
               "{} name(s). Model species: {}",
               ntypes, narg > 2 ? narg - 2 : 0, known);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair_style mlip must start with '* *', got '{} {}'", arg[0],
               arg[1]);

  for (int t = 1; t <= ntypes; t++) {
    const char *el = arg[t + 1];
    if (strcmp(el, "NULL") == 0) {
      type2species[t] = -1;
      continue;
    }
    int found = -1;
    for (size_t k = 0; k < model_species.size(); k++)
      if (model_species[k] == el) found = (int) k;
    if (found < 0)
      error->all(FLERR,
                 "pair_coeff: element '{}' (atom type {}) is not in the species of model '{}': "
                 "{} (use NULL for types handled by another pair style)",
                 el, t, model_path, known);
    type2species[t] = found;
  }

  bool any_null = false;
  for (int t = 1; t <= ntypes; t++) any_null = any_null || type2species[t] < 0;
  if (any_null && force->pair == this)
    error->all(FLERR, "pair_coeff for pair_style mlip: NULL (atom types not handled by mlip) is "
                      "only allowed under pair_style hybrid or hybrid/overlay");

  int count = 0;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) {
      setflag[i][j] = (type2species[i] >= 0 && type2species[j] >= 0) ? 1 : 0;
      if (setflag[i][j]) count++;
    }
  if (count == 0)
    error->all(FLERR, "pair_coeff for pair_style mlip maps no atom type to a model species");
}

/* ---------------------------------------------------------------------- */

void PairMLIP::init_style()
{
  if (models.empty()) error->all(FLERR, "pair_style mlip: no model loaded");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style mlip requires 'newton on' (newton_pair on): forces on ghost "
                      "atoms are reverse-communicated");
  if ((gamma_select > 0.0 || models.size() > 1) && atom->tag_enable == 0)
    error->all(FLERR, "pair_style mlip: gamma_select and committees need atom IDs");
  check_units();

  if (message_passing) {
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    // ghost atoms out to interaction_range (+ skin): every node whose features
    // reach a local atom is present and has its complete neighbour list
    double need = interaction_range + neighbor->skin;
    if (comm->cutghostuser < need) {
      comm->cutghostuser = need;
      if (comm->me == 0)
        utils::logmesg(lmp, "pair_style mlip: communication cutoff set to {} A (interaction "
                            "range + skin)\n", need);
    }
  } else {
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }
}

double PairMLIP::init_one(int i, int j)
{
  if (setflag[i][j] == 0)
    error->all(FLERR, "All pair coeffs are not set (pair_style mlip: atom types {} and {} are "
                      "not both mapped to model species; NULL types need pair_style "
                      "hybrid/overlay)", i, j);
  cutghost[i][j] = cutghost[j][i] = model_cutoff;
  return model_cutoff;
}

/* ----------------------------------------------------------------------
   edges of model m: the whole graph, or (smaller cutoff) the edges shorter
   than its cutoff, in graph order
------------------------------------------------------------------------- */

void PairMLIP::model_edges(int m, const int64_t *&ei, const int64_t *&ej, const double *&ev,
                           int64_t &ne)
{
  Model &md = models[m];
  if (!md.filtered) {
    ei = edge_i.data();
    ej = edge_j.data();
    ev = edge_vec.data();
    ne = (int64_t) edge_i.size();
    return;
  }
  if (md.edges_serial != graph_serial) {
    md.edge_i.clear();
    md.edge_j.clear();
    md.edge_vec.clear();
    const size_t n = edge_i.size();
    for (size_t e = 0; e < n; e++) {
      if (edge_rsq[e] >= md.cutsq) continue;
      md.edge_i.push_back(edge_i[e]);
      md.edge_j.push_back(edge_j[e]);
      md.edge_vec.insert(md.edge_vec.end(), &edge_vec[3 * e], &edge_vec[3 * e] + 3);
    }
    md.edges_serial = graph_serial;
  }
  ei = md.edge_i.data();
  ej = md.edge_j.data();
  ev = md.edge_vec.data();
  ne = (int64_t) md.edge_i.size();
}

/* ---------------------------------------------------------------------- */

void PairMLIP::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  double **x = atom->x;
  double **f = atom->f;
  int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;

  const int inum = list->inum;
  const int gnum = message_passing ? list->gnum : 0;
  int *ilist = list->ilist;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  if ((int) node_of.size() < nall) node_of.resize(nall);
  std::fill(node_of.begin(), node_of.begin() + nall, -1);
  atom_of.clear();
  species.clear();
  edge_i.clear();
  edge_j.clear();
  edge_vec.clear();
  edge_rsq.clear();

  auto add_node = [&](int a) {
    node_of[a] = (int) atom_of.size();
    atom_of.push_back(a);
    species.push_back(type2species[type[a]]);
    return node_of[a];
  };

  // local centres first: they are the n_local nodes whose energies count
  for (int ii = 0; ii < inum; ii++) {
    int i = ilist[ii];
    if (i < nlocal && type2species[type[i]] >= 0) add_node(i);
  }
  const int64_t n_local = (int64_t) atom_of.size();
  // message passing: ghost centres are nodes too (energies computed, not summed)
  for (int ii = inum; ii < inum + gnum; ii++) {
    int i = ilist[ii];
    if (type2species[type[i]] >= 0 && node_of[i] < 0) add_node(i);
  }

  // Local models: a ghost that is a periodic image of an atom owned by this rank becomes that
  // atom's node (edge_vec still uses the ghost's coordinates, so the image shift is exact). Its
  // force and virial then land on the owner directly, which is what the reverse communication
  // would have done, and the model evaluates fewer nodes (on one rank: only the local atoms).
  // Not for message-passing models: their ghost centres carry their own (duplicate) edges.
  const bool fold_images = !message_passing && atom->tag_enable;
  if (fold_images) {
    tagint *tag = atom->tag;
    tagint maxtag = 0;
    for (int64_t k = 0; k < n_local; k++) maxtag = std::max(maxtag, tag[atom_of[k]]);
    // node_of_tag is all -1 between calls (entries are reset below): no O(max tag) fill per step
    if ((tagint) node_of_tag.size() < maxtag + 1) node_of_tag.resize(maxtag + 1, -1);
    for (int64_t k = 0; k < n_local; k++) node_of_tag[tag[atom_of[k]]] = (int) k;
    for (int a = nlocal; a < nall; a++) {
      tagint t = tag[a];
      if (t > 0 && t <= maxtag && node_of_tag[t] >= 0) node_of[a] = node_of_tag[t];
    }
    for (int64_t k = 0; k < n_local; k++) node_of_tag[tag[atom_of[k]]] = -1;
  }

  for (int ii = 0; ii < inum + gnum; ii++) {
    int i = ilist[ii];
    int ni = node_of[i];
    if (ni < 0) continue;
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    int *jlist = firstneigh[i];
    int jnum = numneigh[i];
    for (int jj = 0; jj < jnum; jj++) {
      int j = jlist[jj] & NEIGHMASK;
      if (type2species[type[j]] < 0) continue;
      double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq >= model_cutsq || rsq <= 0.0) continue;
      int nj = node_of[j];
      if (nj < 0) nj = add_node(j);
      edge_i.push_back(ni);
      edge_j.push_back(nj);
      edge_vec.push_back(dx);
      edge_vec.push_back(dy);
      edge_vec.push_back(dz);
      edge_rsq.push_back(rsq);
    }
  }

  graph_serial++;
  graph_step = update->ntimestep;
  graph_nlocal = n_local;

  const int64_t n_nodes = (int64_t) atom_of.size();
  const bool want_atom_virial = vflag_atom || cvflag_atom;
  atom_energy.resize(n_nodes);
  forces.resize(3 * n_nodes);
  atom_virial.resize(want_atom_virial ? 9 * n_nodes : 0);
  energy0 = 0.0;
  for (double &v : virial0) v = 0.0;

  // n_nodes == 0: e.g. an MPI rank whose sub-domain holds no atom (it still takes part in the
  // collective steps below)
  if (n_nodes > 0) {
    const int64_t *ei, *ej;
    const double *ev;
    int64_t ne;
    model_edges(0, ei, ej, ev, ne);
    char msg[ERRLEN] = {0};
    int rc = api->compute(models[0].engine, n_nodes, n_local, species.data(), ne, ei, ej, ev,
                          &energy0, atom_energy.data(), forces.data(), virial0,
                          want_atom_virial ? atom_virial.data() : nullptr, msg, ERRLEN);
    if (rc != 0)
      error->one(FLERR, "pair_style mlip: evaluating model '{}' failed on step {}: {}",
                 models[0].path, update->ntimestep, msg);

    const double s = energy_scale;
    for (int64_t k = 0; k < n_nodes; k++) {
      double *fa = f[atom_of[k]];
      fa[0] += s * forces[3 * k];
      fa[1] += s * forces[3 * k + 1];
      fa[2] += s * forces[3 * k + 2];
    }

    if (eflag_global) eng_vdwl += s * energy0;
    if (eflag_atom)
      for (int64_t k = 0; k < n_local; k++) eatom[atom_of[k]] += s * atom_energy[k];

    // LAMMPS order xx yy zz xy xz yz; W[a][b] = sum_k x_k,a F_k,b (row-major)
    if (vflag_global) {
      virial[0] += s * virial0[0];
      virial[1] += s * virial0[4];
      virial[2] += s * virial0[8];
      virial[3] += s * virial0[1];
      virial[4] += s * virial0[2];
      virial[5] += s * virial0[5];
    }
    if (vflag_atom) {
      for (int64_t k = 0; k < n_nodes; k++) {
        const double *w = &atom_virial[9 * k];
        double *v = vatom[atom_of[k]];
        v[0] += s * w[0];
        v[1] += s * w[4];
        v[2] += s * w[8];
        v[3] += s * w[1];
        v[4] += s * w[2];
        v[5] += s * w[5];
      }
    }
    if (cvflag_atom) {
      // centroid order xx yy zz xy xz yz yx zx zy
      static const int order[9] = {0, 4, 8, 1, 2, 5, 3, 6, 7};
      for (int64_t k = 0; k < n_nodes; k++) {
        const double *w = &atom_virial[9 * k];
        double *v = cvatom[atom_of[k]];
        for (int c = 0; c < 9; c++) v[c] += s * w[order[c]];
      }
    }
  }

  // collective parts: the same decision on every rank (global step, triggers set on all ranks)
  const bigint step = update->ntimestep;
  if (models.size() > 1 && ((out_freq > 0 && step % out_freq == 0) || devi_trigger))
    evaluate_committee();
  if (n_graded > 0 && ((gamma_every > 0 && step % gamma_every == 0) || gamma_trigger))
    ensure_gamma("pair_style mlip");
}

/* ---------------------------------------------------------------------- */

void PairMLIP::grow_peratom()
{
  if (atom->nmax > nmax_peratom || !gamma_atom) {
    nmax_peratom = std::max(atom->nmax, 1);
    memory->destroy(gamma_atom);
    memory->destroy(fdevi_atom);
    memory->create(gamma_atom, nmax_peratom, "pair:mlip:gamma");
    memory->create(fdevi_atom, nmax_peratom, "pair:mlip:fdevi");
    for (int i = 0; i < nmax_peratom; i++) gamma_atom[i] = fdevi_atom[i] = 0.0;
  }
}

/* ----------------------------------------------------------------------
   model deviation of the committee on the current graph (collective).
   Definitions (the ASE calculator's, mlip.calculator.committee_deviation;
   DeePMD-kit's model_devi): M models, N atoms handled by this style,
     eps_F,i = sqrt( mean_m |F_i^m - <F_i>|^2 )        per atom, forces summed
               over all ranks (ghost contributions reverse-communicated)
     max/min/avg_devi_f = max/min/mean over atoms of eps_F,i
     sigma_W[ab] = sqrt( mean_m (W^m_ab - <W_ab>)^2 ) / N   (9 components)
     max/min_devi_v = max/min over the 9 components, avg_devi_v = |sigma_W|_F / 3
     devi_e = sqrt( mean_m (E^m - <E>)^2 ) / N
------------------------------------------------------------------------- */

void PairMLIP::evaluate_committee()
{
  const int M = (int) models.size();
  const int stride = 3 * M;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int64_t n_nodes = (int64_t) atom_of.size();
  const double s = energy_scale;
  int *type = atom->type;

  fbuf.assign((size_t) nall * stride, 0.0);
  std::vector<double> ew(10 * M, 0.0);    // [M] energies, then [M][9] virials (this rank)
  auto scatter = [&](int m, double e, const double *w) {
    for (int64_t k = 0; k < n_nodes; k++) {
      double *b = &fbuf[(size_t) atom_of[k] * stride + 3 * m];
      b[0] += s * forces[3 * k];
      b[1] += s * forces[3 * k + 1];
      b[2] += s * forces[3 * k + 2];
    }
    ew[m] = s * e;
    for (int c = 0; c < 9; c++) ew[M + 9 * m + c] = s * w[c];
  };
  scatter(0, energy0, virial0);    // `forces` still holds the driving model's node forces
  for (int m = 1; m < M; m++) {
    double e = 0.0, w[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (n_nodes > 0) {
      const int64_t *ei, *ej;
      const double *ev;
      int64_t ne;
      model_edges(m, ei, ej, ev, ne);
      char msg[ERRLEN] = {0};
      int rc = api->compute(models[m].engine, n_nodes, graph_nlocal, species.data(), ne, ei, ej,
                            ev, &e, atom_energy.data(), forces.data(), w, nullptr, msg, ERRLEN);
      if (rc != 0)
        error->one(FLERR, "pair_style mlip: evaluating committee model '{}' failed on step {}: {}",
                   models[m].path, update->ntimestep, msg);
    }
    scatter(m, e, w);
  }

  // forces of ghost nodes belong to atoms owned elsewhere (or to images): sum them onto owners
  comm_models = M;
  comm->reverse_comm(this);

  grow_peratom();
  double fmax = 0.0, fmin = DBL_MAX, fsum = 0.0;
  bigint count = 0;
  for (int i = 0; i < nlocal; i++) {
    fdevi_atom[i] = 0.0;
    if (type2species[type[i]] < 0) continue;
    const double *b = &fbuf[(size_t) i * stride];
    double mean[3] = {0.0, 0.0, 0.0};
    for (int m = 0; m < M; m++)
      for (int d = 0; d < 3; d++) mean[d] += b[3 * m + d];
    for (int d = 0; d < 3; d++) mean[d] /= M;
    double var = 0.0;
    for (int m = 0; m < M; m++)
      for (int d = 0; d < 3; d++) {
        double dd = b[3 * m + d] - mean[d];
        var += dd * dd;
      }
    double dev = sqrt(var / M);
    fdevi_atom[i] = dev;
    fmax = std::max(fmax, dev);
    fmin = std::min(fmin, dev);
    fsum += dev;
    count++;
  }
  double gmax = 0.0, gmin = 0.0, gsum = 0.0;
  bigint natoms = 0;
  MPI_Allreduce(&fmax, &gmax, 1, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(&fmin, &gmin, 1, MPI_DOUBLE, MPI_MIN, world);
  MPI_Allreduce(&fsum, &gsum, 1, MPI_DOUBLE, MPI_SUM, world);
  MPI_Allreduce(&count, &natoms, 1, MPI_LMP_BIGINT, MPI_SUM, world);
  std::vector<double> ew_all(ew.size(), 0.0);
  MPI_Allreduce(ew.data(), ew_all.data(), (int) ew.size(), MPI_DOUBLE, MPI_SUM, world);

  const bigint step = update->ntimestep;
  const bool write = out_freq > 0 && step % out_freq == 0 && step != devi_step;
  devi_step = step;
  if (!write || comm->me != 0) return;

  const double n = natoms > 0 ? (double) natoms : 1.0;
  if (natoms == 0) gmin = 0.0;
  double emean = 0.0;
  for (int m = 0; m < M; m++) emean += ew_all[m];
  emean /= M;
  double evar = 0.0;
  for (int m = 0; m < M; m++) evar += (ew_all[m] - emean) * (ew_all[m] - emean);
  const double devi_e = sqrt(evar / M) / n;
  double vmax = 0.0, vmin = DBL_MAX, vsq = 0.0;
  for (int c = 0; c < 9; c++) {
    double mean = 0.0;
    for (int m = 0; m < M; m++) mean += ew_all[M + 9 * m + c];
    mean /= M;
    double var = 0.0;
    for (int m = 0; m < M; m++) {
      double d = ew_all[M + 9 * m + c] - mean;
      var += d * d;
    }
    double sd = sqrt(var / M) / n;
    vmax = std::max(vmax, sd);
    vmin = std::min(vmin, sd);
    vsq += sd * sd;
  }
  const double vavg = sqrt(vsq) / 3.0;

  if (!devi_fp) {
    devi_fp = fopen(out_file.c_str(), "w");
    if (!devi_fp)
      error->one(FLERR, "pair_style mlip: cannot open model deviation file '{}': {}", out_file,
                 utils::getsyserror());
    fprintf(devi_fp, "#%11s %19s %19s %19s %19s %19s %19s %19s\n", "step", "max_devi_v",
            "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e");
  }
  fprintf(devi_fp, "%12lld %19.12e %19.12e %19.12e %19.12e %19.12e %19.12e %19.12e\n",
          (long long) step, vmax, vmin, vavg, gmax, gmin, gsum / n, devi_e);
  fflush(devi_fp);
}

int PairMLIP::pack_reverse_comm(int n, int first, double *buf)
{
  const int stride = 3 * comm_models;
  int m = 0;
  for (int i = first; i < first + n; i++) {
    const double *b = &fbuf[(size_t) i * stride];
    for (int c = 0; c < stride; c++) buf[m++] = b[c];
  }
  return m;
}

void PairMLIP::unpack_reverse_comm(int n, int *list, double *buf)
{
  const int stride = 3 * comm_models;
  int m = 0;
  for (int i = 0; i < n; i++) {
    double *b = &fbuf[(size_t) list[i] * stride];
    for (int c = 0; c < stride; c++) b[c] += buf[m++];
  }
}

/* ----------------------------------------------------------------------
   extrapolation grade on the graph of the last force call (collective)
------------------------------------------------------------------------- */

void PairMLIP::ensure_gamma(const char *who)
{
  if (n_graded == 0)
    error->all(FLERR, "{}: none of the models of pair_style mlip carries an active set (export "
                      "the model with one to get the extrapolation grade)", who);
  if (graph_serial < 0)
    error->all(FLERR, "{}: pair_style mlip has not computed forces yet", who);
  if (gamma_serial == graph_serial) return;

  grow_peratom();
  const int nlocal = atom->nlocal;
  for (int i = 0; i < nlocal; i++) gamma_atom[i] = 0.0;
  const int64_t n_nodes = (int64_t) atom_of.size();
  const int64_t n_local = graph_nlocal;
  gamma_buf.resize(n_local);
  if (n_local > 0) {
    for (int m = 0; m < (int) models.size(); m++) {
      if (!models[m].graded) continue;
      const int64_t *ei, *ej;
      const double *ev;
      int64_t ne;
      model_edges(m, ei, ej, ev, ne);
      char msg[ERRLEN] = {0};
      int rc = api->grade(models[m].engine, n_nodes, n_local, species.data(), ne, ei, ej, ev,
                          gamma_buf.data(), msg, ERRLEN);
      if (rc != 0)
        error->one(FLERR, "pair_style mlip: extrapolation grade of model '{}' failed on step {}: "
                          "{}", models[m].path, update->ntimestep, msg);
      // committee: the element-wise maximum over the models with an active set
      for (int64_t k = 0; k < n_local; k++) {
        double &g = gamma_atom[atom_of[k]];
        g = std::max(g, gamma_buf[k]);
      }
    }
  }
  double local_max = 0.0;
  for (int64_t k = 0; k < n_local; k++) local_max = std::max(local_max, gamma_atom[atom_of[k]]);
  MPI_Allreduce(&local_max, &gamma_global, 1, MPI_DOUBLE, MPI_MAX, world);
  gamma_serial = graph_serial;
  check_gamma_thresholds();
}

void PairMLIP::check_gamma_thresholds()
{
  if (gamma_select <= 0.0 && gamma_break <= 0.0) return;
  if (graph_step == checked_step) return;    // e.g. step 0 seen again by a second run
  checked_step = graph_step;
  const double g = gamma_global;
  if (gamma_select > 0.0 && g > gamma_select) write_selected(g);
  if (gamma_break > 0.0 && g > gamma_break) {
    // the atom with the largest gamma, for the message
    struct {
      double v;
      int tag;
    } in{-1.0, 0}, out{0.0, 0};
    for (int i = 0; i < atom->nlocal; i++)
      if (gamma_atom[i] > in.v) in = {gamma_atom[i], (int) atom->tag[i]};
    MPI_Allreduce(&in, &out, 1, MPI_DOUBLE_INT, MPI_MAXLOC, world);
    error->all(FLERR,
               "pair_style mlip: extrapolation grade gamma = {:.6g} (atom ID {}) exceeds "
               "gamma_break {} on step {}: the model extrapolates, stopping.{}",
               g, out.tag, gamma_break, update->ntimestep,
               gamma_select > 0.0 ? fmt::format(" The configuration was appended to '{}'.",
                                                select_file)
                                  : std::string());
  }
}

/* ----------------------------------------------------------------------
   append the current configuration to select_file (extended XYZ), rank 0
   gathers: cell and pbc, step and max gamma in the comment line, per atom
   species (model element, X for types not handled by mlip), position
   (relative to the box origin), atom ID and gamma
------------------------------------------------------------------------- */

void PairMLIP::write_selected(double gmax)
{
  const int nlocal = atom->nlocal;
  std::vector<double> mine(6 * (size_t) nlocal);
  for (int i = 0; i < nlocal; i++) {
    double *b = &mine[6 * (size_t) i];
    b[0] = (double) atom->tag[i];
    b[1] = (double) atom->type[i];
    b[2] = atom->x[i][0] - domain->boxlo[0];
    b[3] = atom->x[i][1] - domain->boxlo[1];
    b[4] = atom->x[i][2] - domain->boxlo[2];
    b[5] = gamma_atom[i];
  }
  int nsend = 6 * nlocal;
  const int nprocs = comm->nprocs;
  std::vector<int> counts(nprocs, 0), displs(nprocs, 0);
  MPI_Gather(&nsend, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
  std::vector<double> all;
  int tot = 0;
  if (comm->me == 0) {
    for (int p = 0; p < nprocs; p++) {
      displs[p] = tot;
      tot += counts[p];
    }
    all.resize(std::max(tot, 1));
  }
  MPI_Gatherv(mine.data(), nsend, MPI_DOUBLE, all.data(), counts.data(), displs.data(),
              MPI_DOUBLE, 0, world);
  n_selected++;
  if (comm->me != 0) return;

  const size_t n = (size_t) tot / 6;
  std::vector<size_t> order(n);
  for (size_t k = 0; k < n; k++) order[k] = k;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return all[6 * a] < all[6 * b]; });

  FILE *fp = fopen(select_file.c_str(), select_started ? "a" : "w");
  if (!fp)
    error->one(FLERR, "pair_style mlip: cannot open gamma_select file '{}': {}", select_file,
               utils::getsyserror());
  select_started = true;
  const double *h = domain->h;    // xprd yprd zprd yz xz xy
  fprintf(fp, "%zu\n", n);
  fprintf(fp,
          "Lattice=\"%.17g 0 0 %.17g %.17g 0 %.17g %.17g %.17g\" "
          "Properties=species:S:1:pos:R:3:id:I:1:gamma:R:1 pbc=\"%c %c %c\" step=%lld "
          "gamma=%.17g\n",
          h[0], h[5], h[1], h[4], h[3], h[2], domain->xperiodic ? 'T' : 'F',
          domain->yperiodic ? 'T' : 'F', domain->zperiodic ? 'T' : 'F',
          (long long) update->ntimestep, gmax);
  for (size_t k : order) {
    const double *b = &all[6 * k];
    int t = (int) b[1];
    int sp = (t >= 1 && t < (int) type2species.size()) ? type2species[t] : -1;
    const char *el = sp >= 0 ? model_species[sp].c_str() : "X";
    fprintf(fp, "%s %.17g %.17g %.17g %lld %.17g\n", el, b[2], b[3], b[4], (long long) b[0],
            b[5]);
  }
  fclose(fp);
}

/* ----------------------------------------------------------------------
   fix pair support:  fix ID all pair N mlip gamma 1 [fdevi 1]
     gamma  per-atom extrapolation grade      (trigger gamma_flag)
     fdevi  per-atom committee force deviation (trigger fdevi_flag)
------------------------------------------------------------------------- */

void *PairMLIP::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, "gamma_flag") == 0) return (void *) &gamma_trigger;
  if (strcmp(name, "fdevi_flag") == 0) return (void *) &devi_trigger;
  if (strcmp(name, "gamma_max") == 0) return (void *) &gamma_global;
  return nullptr;
}

void *PairMLIP::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  if (strcmp(name, "gamma") == 0) {
    if (n_graded == 0)
      error->all(FLERR, "pair_style mlip: per-atom 'gamma' requested, but no model carries an "
                        "active set");
    return (void *) gamma_atom;
  }
  if (strcmp(name, "fdevi") == 0) {
    if (models.size() < 2)
      error->all(FLERR, "pair_style mlip: per-atom 'fdevi' (force deviation) needs a committee "
                        "of two or more models");
    return (void *) fdevi_atom;
  }
  return nullptr;
}

/* ---------------------------------------------------------------------- */

double PairMLIP::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += (double) node_of.capacity() * sizeof(int) + (double) atom_of.capacity() * sizeof(int);
  bytes += (double) (species.capacity() + edge_i.capacity() + edge_j.capacity()) *
      sizeof(int64_t);
  bytes += (double) (edge_vec.capacity() + edge_rsq.capacity() + atom_energy.capacity() +
                     forces.capacity() + atom_virial.capacity() + fbuf.capacity()) *
      sizeof(double);
  bytes += 2.0 * nmax_peratom * sizeof(double);
  return bytes;
}
