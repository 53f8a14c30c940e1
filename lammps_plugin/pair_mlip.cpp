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
------------------------------------------------------------------------- */

#include "pair_mlip.h"

#include "atom.h"
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
  t.handle = handle;
  t.path = found;
  api_table = t;
  return &api_table;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairMLIP::PairMLIP(LAMMPS *lmp) :
    Pair(lmp), api(nullptr), engine(nullptr), num_threads(1), model_cutoff(0.0),
    model_cutsq(0.0), interaction_range(0.0), message_passing(false), energy_scale(1.0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the engine returns the global virial directly (W = -sum_e r_e (x) g_e)
  no_virial_fdotr_compute = 1;
  // per-atom virials are full 3x3 tensors: centroid stress is available
  centroidstressflag = CENTROID_AVAIL;
}

PairMLIP::~PairMLIP()
{
  close_engine();
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    if (cutghost) memory->destroy(cutghost);
  }
}

void PairMLIP::close_engine()
{
  if (engine && api) api->close(engine);
  engine = nullptr;
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
   pair_style mlip MODEL.pt [threads N]
------------------------------------------------------------------------- */

void PairMLIP::settings(int narg, char **arg)
{
  if (narg < 1)
    error->all(FLERR, "Illegal pair_style mlip command: expected 'pair_style mlip MODEL.pt "
                      "[threads N]'");

  int threads = -1;
  int iarg = 1;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "threads") == 0) {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mlip: keyword 'threads' needs a value");
      threads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (threads < 1)
        error->all(FLERR, "pair_style mlip: 'threads' must be >= 1, got {}", arg[iarg + 1]);
      iarg += 2;
    } else {
      error->all(FLERR, "pair_style mlip: unknown keyword '{}' (known keywords: threads)",
                 arg[iarg]);
    }
  }
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

  // refuse unsupported LAMMPS units before the (slow) model load
  if (ev_per_energy_unit(update->unit_style) == 0.0)
    error->all(FLERR, "pair_style mlip does not support 'units {}': use 'units metal' (the "
                      "models' native eV/Angstrom) or 'units real' (converted)",
               update->unit_style);

  std::string err;
  api = load_engine_api(err);
  if (!api) error->all(FLERR, "pair_style mlip: {}", err);

  close_engine();
  model_path = arg[0];
  char msg[ERRLEN] = {0};
  engine = api->open(model_path.c_str(), num_threads, msg, ERRLEN);
  int ok = engine ? 1 : 0, all_ok = 0, any_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, world);
  MPI_Allreduce(&ok, &any_ok, 1, MPI_INT, MPI_MAX, world);
  if (!any_ok) error->all(FLERR, "pair_style mlip: cannot load model '{}': {}", model_path, msg);
  if (!ok) error->one(FLERR, "pair_style mlip: cannot load model '{}': {}", model_path, msg);
  if (!all_ok) error->all(FLERR, "pair_style mlip: model '{}' failed to load on another rank",
                          model_path);

  model_species.clear();
  int ns = api->num_species(engine);
  for (int k = 0; k < ns; k++) model_species.emplace_back(api->species(engine, k));
  model_cutoff = api->cutoff(engine);
  model_cutsq = model_cutoff * model_cutoff;
  interaction_range = api->interaction_range(engine);
  message_passing = interaction_range > model_cutoff * (1.0 + 1e-12);
  ghostneigh = message_passing ? 1 : 0;

  check_units();

  if (comm->me == 0) {
    std::string sp;
    for (const auto &s : model_species) sp += (sp.empty() ? "" : " ") + s;
    utils::logmesg(lmp,
                   "pair_style mlip: model '{}' ({}, species {}), cutoff {} A, interaction range "
                   "{} A{}, {} libtorch thread(s) per MPI rank, engine {}\n",
                   model_path, api->family(engine), sp, model_cutoff, interaction_range,
                   message_passing ? " (message passing: ghost neighbours)" : "", num_threads,
                   api->path);
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
  const char *model_units = api->units(engine);
  double model_ev = ev_per_energy_unit(model_units ? model_units : "");
  if (model_ev == 0.0)
    error->all(FLERR, "pair_style mlip: model '{}' declares units '{}', which are not supported "
                      "(only metal and real)", model_path, model_units ? model_units : "");
  double lammps_ev = ev_per_energy_unit(update->unit_style);
  if (lammps_ev == 0.0)
    error->all(FLERR, "pair_style mlip does not support 'units {}': use 'units metal' (the "
                      "models' native eV/Angstrom) or 'units real' (converted)",
               update->unit_style);
  // lengths are Angstrom in both metal and real; only energies are scaled
  energy_scale = model_ev / lammps_ev;
}

/* ----------------------------------------------------------------------
   pair_coeff * * El1 El2 ... (one element name or NULL per atom type)
------------------------------------------------------------------------- */

void PairMLIP::coeff(int narg, char **arg)
{
  if (!engine) error->all(FLERR, "pair_coeff for pair_style mlip before the model was loaded");
  if (!allocated) allocate();

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
  if (!engine) error->all(FLERR, "pair_style mlip: no model loaded");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style mlip requires 'newton on' (newton_pair on): forces on ghost "
                      "atoms are reverse-communicated");
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
    }
  }

  const int64_t n_nodes = (int64_t) atom_of.size();
  const int64_t n_edges = (int64_t) edge_i.size();
  const bool want_atom_virial = vflag_atom || cvflag_atom;
  atom_energy.resize(n_nodes);
  forces.resize(3 * n_nodes);
  atom_virial.resize(want_atom_virial ? 9 * n_nodes : 0);
  double energy = 0.0, virial9[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  char msg[ERRLEN] = {0};
  if (n_nodes == 0) return;    // e.g. an MPI rank whose sub-domain holds no atom

  int rc = api->compute(engine, n_nodes, n_local, species.data(), n_edges, edge_i.data(),
                        edge_j.data(), edge_vec.data(), &energy, atom_energy.data(),
                        forces.data(), virial9, want_atom_virial ? atom_virial.data() : nullptr,
                        msg, ERRLEN);
  if (rc != 0)
    error->one(FLERR, "pair_style mlip: evaluating model '{}' failed on step {}: {}", model_path,
               update->ntimestep, msg);

  const double s = energy_scale;
  for (int64_t k = 0; k < n_nodes; k++) {
    double *fa = f[atom_of[k]];
    fa[0] += s * forces[3 * k];
    fa[1] += s * forces[3 * k + 1];
    fa[2] += s * forces[3 * k + 2];
  }

  if (eflag_global) eng_vdwl += s * energy;
  if (eflag_atom)
    for (int64_t k = 0; k < n_local; k++) eatom[atom_of[k]] += s * atom_energy[k];

  // LAMMPS order xx yy zz xy xz yz; W[a][b] = sum_k x_k,a F_k,b (row-major)
  if (vflag_global) {
    virial[0] += s * virial9[0];
    virial[1] += s * virial9[4];
    virial[2] += s * virial9[8];
    virial[3] += s * virial9[1];
    virial[4] += s * virial9[2];
    virial[5] += s * virial9[5];
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

/* ---------------------------------------------------------------------- */

double PairMLIP::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += (double) node_of.capacity() * sizeof(int) + (double) atom_of.capacity() * sizeof(int);
  bytes += (double) (species.capacity() + edge_i.capacity() + edge_j.capacity()) *
      sizeof(int64_t);
  bytes += (double) (edge_vec.capacity() + atom_energy.capacity() + forces.capacity() +
                     atom_virial.capacity()) * sizeof(double);
  return bytes;
}
