/* ----------------------------------------------------------------------
   pair_style mlip  (see pair_mlip.h and lammps_plugin/README.md)

   Life cycle, as in LAMMPS' own many-body styles:
     settings()    pair_style: model files and keywords (no file is opened)
     coeff()       pair_coeff * * El1 El2 ...: loads the engine and the
                   models (once per pair_style; paths as utils::open_potential
                   resolves them: as given, else in $LAMMPS_POTENTIALS), then
                   maps atom types to the models' species (map_element2type)
     init_style()  full neighbour list (+ ghost neighbours and a larger
                   communication cutoff for message-passing models)
     compute()     graph (MLIPGraphBuilder), driving model, tally; on their
                   steps the committee (MLIPCommittee) and the extrapolation
                   grade (MLIPGammaMonitor), both on the same graph.
   Forces and per-atom virials of ghost nodes are added to the ghost atoms and
   reverse-communicated by LAMMPS (newton_pair on is required).
------------------------------------------------------------------------- */

#include "pair_mlip.h"

#include "mlip_committee.h"
#include "mlip_feature_exchange.h"
#include "mlip_gamma_monitor.h"
#include "mlip_graph_builder.h"
#include "mlip_model_set.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

using namespace LAMMPS_NS;

namespace {

const char *USAGE = "expected 'pair_style mlip MODEL.pt [MODEL2.pt ...] [threads N] [out_freq N] "
                    "[out_file FILE] [gamma_every N] [gamma_select G FILE] [gamma_break B]'";

const char *const KEYWORDS[] = {"threads", "out_freq", "out_file", "gamma_every", "gamma_select",
                                "gamma_break"};

bool is_keyword(const char *s)
{
  for (const char *k : KEYWORDS)
    if (strcmp(s, k) == 0) return true;
  return false;
}

// edit distance, for "did you mean" (words are short)
size_t edit_distance(const std::string &a, const std::string &b)
{
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); j++) row[j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); j++) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string did_you_mean(const std::string &word)
{
  std::string best;
  size_t best_d = 3;    // at most two edits away
  for (const char *k : KEYWORDS) {
    size_t d = edit_distance(utils::lowercase(word), k);
    if (d < best_d) best_d = d, best = k;
  }
  return best.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", best);
}

// A word after the first model file is another model file (a committee) if it names an existing
// file (as given or in $LAMMPS_POTENTIALS, the rule pair_coeff opens it by) or looks like one (a
// .pt/.pth name or a path); anything else is a keyword, and unknown ones are refused by name.
bool looks_like_model_file(const char *word)
{
  const std::string w(word);
  if (!utils::get_potential_file_path(w).empty()) return true;
  if (w.find('/') != std::string::npos) return true;
  const std::string low = utils::lowercase(w);
  for (const std::string e : {".pt", ".pth"})
    if (low.size() > e.size() && low.compare(low.size() - e.size(), e.size(), e) == 0) return true;
  return false;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairMLIP::PairMLIP(LAMMPS *lmp) :
    Pair(lmp), num_threads(1), energy_scale(1.0), exchanging(nullptr)
{
  special_atoms[0] = special_atoms[1] = special_atoms[2] = 0;
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the engine returns the global virial directly (W = -sum_e r_e (x) g_e)
  no_virial_fdotr_compute = 1;
  // per-atom virials are full 3x3 tensors: centroid stress is available
  centroidstressflag = CENTROID_AVAIL;

  model_set = new MLIPModelSet(lmp);
  graph_builder = new MLIPGraphBuilder(lmp);
  committee = new MLIPCommittee(lmp);
  gamma_monitor = new MLIPGammaMonitor(lmp);
  feature_exchange = new MLIPFeatureExchange(lmp, this, *graph_builder);
}

PairMLIP::~PairMLIP()
{
  delete feature_exchange;
  delete gamma_monitor;
  delete committee;
  delete graph_builder;
  delete model_set;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairMLIP::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  map = new int[n];    // freed by ~Pair
  type2species.assign(n, -1);
  type_element.assign(n, "X");
}

/* ----------------------------------------------------------------------
   pair_style mlip MODEL.pt [MODEL2.pt ...] [keyword value(s) ...]
     threads N
     out_freq N  out_file FILE                  (committee: 2 or more models)
     gamma_every N  gamma_select G FILE  gamma_break B
------------------------------------------------------------------------- */

void PairMLIP::settings(int narg, char **arg)
{
  if (narg < 1 || is_keyword(arg[0]))
    error->all(FLERR, "Illegal pair_style mlip command: {}", USAGE);

  // model files first (the first word always is one); rank 0 decides for the other words
  int iarg = 1;
  model_files.assign(1, arg[0]);
  while (iarg < narg && !is_keyword(arg[iarg])) {
    int model = comm->me == 0 && looks_like_model_file(arg[iarg]) ? 1 : 0;
    MPI_Bcast(&model, 1, MPI_INT, 0, world);
    if (!model)
      error->all(FLERR, "pair_style mlip: unknown keyword '{}'{}, and no model file of that name "
                        "exists; keywords: threads N, out_freq N, out_file FILE, gamma_every N, "
                        "gamma_select G FILE, gamma_break B", arg[iarg], did_you_mean(arg[iarg]));
    model_files.emplace_back(arg[iarg++]);
  }

  const char *threads_text = nullptr;
  int out_freq = 0, gamma_every = 0;
  bool every_given = false;
  double gamma_select = 0.0, gamma_break = 0.0;
  std::string out_file = "model_devi.out", select_file;
  auto need = [&](int n) {
    if (iarg + n >= narg)
      error->all(FLERR, "pair_style mlip: keyword '{}' needs {} value(s); {}", arg[iarg], n,
                 USAGE);
  };
  // values are checked here, named by their keyword (utils::inumeric would not name it)
  auto integer = [&](const char *kw, const char *text, int low) {
    const bool is_int = utils::is_integer(text);
    errno = 0;
    long long v = is_int ? strtoll(text, nullptr, 10) : 0;
    if (!is_int || errno != 0 || v < low || v > MAXSMALLINT)
      error->all(FLERR, "pair_style mlip: '{}' must be an integer >= {}, got '{}'", kw, low, text);
    return (int) v;
  };
  auto positive = [&](const char *kw, const char *text) {
    const bool is_num = utils::is_double(text);
    double v = is_num ? strtod(text, nullptr) : 0.0;
    if (!is_num || !(v > 0.0) || !std::isfinite(v))
      error->all(FLERR, "pair_style mlip: '{}' threshold must be a number > 0, got '{}'", kw, text);
    return v;
  };
  while (iarg < narg) {
    const char *kw = arg[iarg];
    if (strcmp(kw, "threads") == 0) {
      need(1);
      threads_text = arg[iarg + 1];    // checked by the engine's rule below
      iarg += 2;
    } else if (strcmp(kw, "out_freq") == 0) {
      need(1);
      out_freq = integer(kw, arg[iarg + 1], 0);
      iarg += 2;
    } else if (strcmp(kw, "out_file") == 0) {
      need(1);
      out_file = arg[iarg + 1];
      iarg += 2;
    } else if (strcmp(kw, "gamma_every") == 0) {
      need(1);
      gamma_every = integer(kw, arg[iarg + 1], 1);
      every_given = true;
      iarg += 2;
    } else if (strcmp(kw, "gamma_select") == 0) {
      need(2);
      gamma_select = positive(kw, arg[iarg + 1]);
      select_file = arg[iarg + 2];
      iarg += 3;
    } else if (strcmp(kw, "gamma_break") == 0) {
      need(1);
      gamma_break = positive(kw, arg[iarg + 1]);
      iarg += 2;
    } else {
      error->all(FLERR, "pair_style mlip: unknown keyword '{}'{}; model files come first, then "
                        "keywords: {}", kw, did_you_mean(kw), USAGE);
    }
  }

  num_threads = resolve_threads(threads_text);

  // what can be refused without opening a model is refused here
  if (mlip_ev_per_energy_unit(update->unit_style) == 0.0)
    error->all(FLERR, "pair_style mlip does not support 'units {}': use 'units metal' (the "
                      "models' native eV/Angstrom) or 'units real' (converted)",
               update->unit_style);
  if (model_files.size() == 1 && out_freq > 0)
    error->all(FLERR, "pair_style mlip: 'out_freq' (model deviation) needs two or more models "
                      "(a committee), got one");

  committee->configure(out_freq, out_file);
  gamma_monitor->configure(gamma_every, every_given, gamma_select, select_file, gamma_break);

  // a pair_style given again may name other models (other species): pair_coeff loads them
  // and has to be given again
  model_set->close();
  if (allocated) {
    int n = atom->ntypes;
    for (int i = 0; i <= n; i++)
      for (int j = 0; j <= n; j++) setflag[i][j] = 0;
    type2species.assign(n + 1, -1);
    type_element.assign(n + 1, "X");
  }
}

/* ----------------------------------------------------------------------
   libtorch threads per rank: 'threads N', else $MLIP_NUM_THREADS, else 1.
   A given count is checked by the engine's own rule (mlip_parse_num_threads,
   the same as the ASE calculator's): the engine library is loaded for it.
------------------------------------------------------------------------- */

int PairMLIP::resolve_threads(const char *text)
{
  const char *env = getenv("MLIP_NUM_THREADS");
  const bool from_env = !text && env && *env;
  if (!text && !from_env) return 1;    // one libtorch thread per MPI rank: never oversubscribes
  const std::string what = text ? "pair_style mlip: 'threads'"
                                : "pair_style mlip: environment variable MLIP_NUM_THREADS";
  std::string err;
  const MLIPEngineAPI *api = mlip_load_engine_api(err);
  if (!api) error->all(FLERR, "pair_style mlip: {}", err);
  const char *t = text ? text : env;
  if (api->parse_num_threads) {
    char msg[MLIP_ERRLEN] = {0};
    int n = api->parse_num_threads(t, what.c_str(), msg, MLIP_ERRLEN);
    if (n < 1) error->all(FLERR, "{}", msg);
    return n;
  }
  // an engine older than C API version 4: a positive integer
  if (!utils::is_integer(t) || atoi(t) < 1)
    error->all(FLERR, "{} must be an integer >= 1, got '{}'", what, t);
  return atoi(t);
}

/* ----------------------------------------------------------------------
   special_bonds: LAMMPS leaves 1-2/1-3/1-4 pairs whose lj and coul factors
   are both 0 (the default) out of every neighbour list, so bonded atoms
   would be invisible to the model. Refused for the levels that have pairs.
------------------------------------------------------------------------- */

void PairMLIP::count_special_pairs()
{
  for (int &n : special_atoms) n = 0;
  if (atom->molecular == Atom::ATOMIC) return;
  int mine[3] = {0, 0, 0};
  if (atom->molecular == Atom::TEMPLATE || !atom->nspecial) {
    mine[0] = mine[1] = mine[2] = atom->nlocal > 0 ? 1 : 0;    // molecule templates: assume all
  } else {
    for (int i = 0; i < atom->nlocal; i++) {
      const int *ns = atom->nspecial[i];
      if (ns[0] > 0) mine[0]++;
      if (ns[1] > ns[0]) mine[1]++;
      if (ns[2] > ns[1]) mine[2]++;
    }
  }
  MPI_Allreduce(mine, special_atoms, 3, MPI_INT, MPI_SUM, world);
}

void PairMLIP::check_special_bonds()
{
  // neighbor->special_flag[k] == 0: the 1-(k+1) pairs are left out of the lists (Neighbor::init,
  // after init_style; it keeps them for kspace and a few Coulomb styles); the same on every rank
  static const char *level[4] = {"", "1-2", "1-3", "1-4"};
  std::string excluded;
  for (int k = 1; k <= 3; k++)
    if (neighbor->special_flag[k] == 0 && special_atoms[k - 1] > 0)
      excluded += fmt::format("{}{}", excluded.empty() ? "" : ", ", level[k]);
  if (!excluded.empty())
    error->all(FLERR, "pair_style mlip: special_bonds removes the {} neighbours (lj and coul "
                      "factors 0) from the neighbour list, so the model would not see bonded "
                      "atoms: use 'special_bonds lj/coul 1.0 1.0 1.0' (a machine-learned potential "
                      "needs every pair within its cutoff)", excluded);
}

/* ----------------------------------------------------------------------
   pair_coeff * * El1 El2 ... (one element name or NULL per atom type)
------------------------------------------------------------------------- */

void PairMLIP::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  if (!model_set->loaded()) open_models();

  const int ntypes = atom->ntypes;
  const std::vector<std::string> &species = model_set->species();
  std::string known;
  for (const auto &sp : species) known += (known.empty() ? "" : " ") + sp;
  if (narg != 2 + ntypes)
    error->all(FLERR,
               "pair_coeff for pair_style mlip needs '* *' followed by exactly {} element "
               "name(s), one per atom type (NULL for types handled by another pair style); got "
               "{} name(s). Model species: {}",
               ntypes, narg > 2 ? narg - 2 : 0, known);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair_style mlip must start with '* *', got '{} {}'", arg[0],
               arg[1]);

  // every name must be a species of the models (map_element2type accepts any name)
  int nmapped = 0;
  for (int t = 1; t <= ntypes; t++) {
    const char *el = arg[t + 1];
    if (strcmp(el, "NULL") == 0) continue;
    if (std::find(species.begin(), species.end(), el) == species.end())
      error->all(FLERR,
                 "pair_coeff: element '{}' (atom type {}) is not in the species of model '{}': "
                 "{} (use NULL for types handled by another pair style)",
                 el, t, model_set->driver().path, known);
    nmapped++;
  }
  if (nmapped < ntypes && force->pair == this)
    error->all(FLERR, "pair_coeff for pair_style mlip: NULL (atom types not handled by mlip) is "
                      "only allowed under pair_style hybrid or hybrid/overlay");
  if (nmapped == 0)
    error->all(FLERR, "pair_coeff for pair_style mlip maps no atom type to a model species");

  // map[type] -> elements[] (the distinct names of this pair_coeff), setflag[i][j]
  map_element2type(ntypes, arg + 2);
  std::vector<int> element_species(nelements);
  for (int e = 0; e < nelements; e++)
    element_species[e] =
        (int) (std::find(species.begin(), species.end(), elements[e]) - species.begin());
  for (int t = 1; t <= ntypes; t++) {
    type2species[t] = map[t] >= 0 ? element_species[map[t]] : -1;
    type_element[t] = map[t] >= 0 ? elements[map[t]] : "X";
  }
}

/* ----------------------------------------------------------------------
   models of the current pair_style (collective), and what they imply for
   LAMMPS: ghost neighbours, reverse-communication width, graph cutoff
------------------------------------------------------------------------- */

void PairMLIP::open_models()
{
  model_set->open(model_files, num_threads);
  const std::vector<MLIPModel> &models = model_set->models();
  const int nmodels = model_set->size();

  // message passing: a deep ghost shell whose ghost centres carry edges, or (every
  // message-passing model has the layer split) one cutoff of ghosts whose features are exchanged
  // between layers
  const bool exchange = model_set->exchange();
  ghostneigh = model_set->message_passing() && !exchange ? 1 : 0;
  // committee: every model's forces [nall][3 M] are reverse-communicated; the exchange moves
  // feature rows both ways
  const int width = exchange ? (int) model_set->exchange_width() : 0;
  comm_reverse = std::max(nmodels > 1 ? 3 * nmodels : 0, width);
  comm_forward = width;

  if (gamma_monitor->requested() && model_set->num_graded() == 0) {
    const bool v2 = model_set->api()->has_grade != nullptr;
    model_set->close();    // a pair_coeff given again after this error tries again
    error->all(FLERR, "pair_style mlip: gamma_every/gamma_select/gamma_break need a model "
                      "exported with an active set (extrapolation grade){}; none of the {} "
                      "model(s) has one",
               v2 ? "" : " and an engine with C API version 2", nmodels);
  }
  energy_scale = model_set->energy_scale();

  std::vector<double> cutoffs;
  for (const auto &m : models) cutoffs.push_back(m.cutoff);
  if (exchange)
    graph_builder->setup(model_set->cutoff(), false, cutoffs, &MLIPFeatureExchange::callback,
                         feature_exchange);
  else
    graph_builder->setup(model_set->cutoff(), model_set->message_passing(), cutoffs);

  model_set->log(num_threads);
  if (comm->me == 0) {
    const int out_freq = committee->output_every();
    if (nmodels > 1)
      utils::logmesg(lmp, "pair_style mlip: model deviation of {} models {}\n", nmodels,
                     out_freq > 0
                         ? fmt::format("every {} steps to '{}'", out_freq, committee->output_file())
                         : std::string("only on request (fix pair ... fdevi 1)"));
    const double select = gamma_monitor->select_threshold();
    const double brk = gamma_monitor->break_threshold();
    if (gamma_monitor->every_steps() > 0)
      utils::logmesg(lmp, "pair_style mlip: extrapolation grade every {} steps{}{}\n",
                     gamma_monitor->every_steps(),
                     select > 0.0 ? fmt::format(", gamma > {} written to '{}'", select,
                                                gamma_monitor->select_path())
                                  : std::string(),
                     brk > 0.0 ? fmt::format(", run stops at gamma > {}", brk) : std::string());
  }
  model_set->check_threads(num_threads);
}

/* ---------------------------------------------------------------------- */

void PairMLIP::init_style()
{
  if (!model_set->loaded()) error->all(FLERR, "pair_style mlip: no model loaded");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style mlip requires 'newton on' (newton_pair on): forces on ghost "
                      "atoms are reverse-communicated");
  if ((gamma_monitor->select_threshold() > 0.0 || model_set->size() > 1) && atom->tag_enable == 0)
    error->all(FLERR, "pair_style mlip: gamma_select and committees need atom IDs");
  energy_scale = model_set->energy_scale();
  count_special_pairs();    // against neighbor->special_flag in compute(): set after init_style
  // Comm sizes its buffers from force->pair at Comm::init (after this). Under pair_style hybrid
  // that is the hybrid style, which took its sizes from the sub-styles at pair_style time, before
  // pair_coeff opened the models and set ours (exchange width, committee rows): raise them.
  if (force->pair && force->pair != this) {
    force->pair->comm_forward = std::max(force->pair->comm_forward, comm_forward);
    force->pair->comm_reverse = std::max(force->pair->comm_reverse, comm_reverse);
  }

  if (model_set->message_passing() && !model_set->exchange()) {
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    // ghost atoms out to interaction_range (+ skin): every node whose features
    // reach a local atom is present and has its complete neighbour list
    double need = model_set->interaction_range() + neighbor->skin;
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
  cutghost[i][j] = cutghost[j][i] = model_set->cutoff();
  return model_set->cutoff();
}

/* ---------------------------------------------------------------------- */

void PairMLIP::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  check_special_bonds();

  graph_builder->build(list, type2species);
  char msg[MLIP_ERRLEN] = {0};
  const MLIPModel &driver = model_set->driver();
  if (model_set->api()->evaluate(driver.engine, graph_builder->input(0), drive,
                                 vflag_atom || cvflag_atom, msg) != 0)
    error->one(FLERR, "pair_style mlip: evaluating model '{}' failed on step {}: {}", driver.path,
               update->ntimestep, msg);
  tally(drive);

  // collective parts: the same decision on every rank (global step, triggers set on all ranks)
  const bigint step = update->ntimestep;
  if (model_set->size() > 1 && committee->due(step)) evaluate_committee();
  if (model_set->num_graded() > 0 && gamma_monitor->due(step)) ensure_gamma("pair_style mlip");
}

// the driving model's node results onto LAMMPS' atoms (ghost nodes onto ghost atoms)
void PairMLIP::tally(const MLIPResult &r)
{
  const std::vector<int> &atom_of = graph_builder->node_atoms();
  const int64_t n_nodes = graph_builder->num_nodes();
  const int64_t n_local = graph_builder->num_local();
  if (n_nodes == 0) return;
  const double s = energy_scale;
  double **f = atom->f;

  for (int64_t k = 0; k < n_nodes; k++) {
    double *fa = f[atom_of[k]];
    fa[0] += s * r.forces[3 * k];
    fa[1] += s * r.forces[3 * k + 1];
    fa[2] += s * r.forces[3 * k + 2];
  }
  if (eflag_global) eng_vdwl += s * r.energy;
  if (eflag_atom)
    for (int64_t k = 0; k < n_local; k++) eatom[atom_of[k]] += s * r.atom_energy[k];

  // LAMMPS order xx yy zz xy xz yz; W[a][b] = sum_k x_k,a F_k,b (row-major)
  if (vflag_global) {
    virial[0] += s * r.virial[0];
    virial[1] += s * r.virial[4];
    virial[2] += s * r.virial[8];
    virial[3] += s * r.virial[1];
    virial[4] += s * r.virial[2];
    virial[5] += s * r.virial[5];
  }
  if (vflag_atom) {
    for (int64_t k = 0; k < n_nodes; k++) {
      const double *w = &r.atom_virial[9 * k];
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
      const double *w = &r.atom_virial[9 * k];
      double *v = cvatom[atom_of[k]];
      for (int c = 0; c < 9; c++) v[c] += s * w[order[c]];
    }
  }
}

void PairMLIP::evaluate_committee()
{
  committee->gather_forces(*model_set->api(), model_set->models(), *graph_builder, drive,
                           energy_scale);
  // forces of ghost nodes belong to atoms owned elsewhere (or to images): sum them onto owners
  exchange_rows(committee, true);
  committee->finish(type2species);
}

/* ----------------------------------------------------------------------
   per-atom rows of a helper through LAMMPS' ghost communication; the
   buffers are sized by comm_reverse / comm_forward, set in open_models()
------------------------------------------------------------------------- */

void PairMLIP::exchange_rows(MLIPAtomRows *rows, bool reverse)
{
  exchanging = rows;
  if (reverse)
    comm->reverse_comm(this);
  else
    comm->forward_comm(this);
  exchanging = nullptr;
}

int PairMLIP::pack_reverse_comm(int n, int first, double *buf)
{
  return exchanging ? exchanging->pack_reverse(n, first, buf) : 0;
}

void PairMLIP::unpack_reverse_comm(int n, int *list, double *buf)
{
  if (exchanging) exchanging->unpack_reverse(n, list, buf);
}

int PairMLIP::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  return exchanging ? exchanging->pack_forward(n, list, buf) : 0;
}

void PairMLIP::unpack_forward_comm(int n, int first, double *buf)
{
  if (exchanging) exchanging->unpack_forward(n, first, buf);
}

/* ----------------------------------------------------------------------
   extrapolation grade on the graph of the last force call (collective)
------------------------------------------------------------------------- */

bool PairMLIP::has_grade() const
{
  return model_set->loaded() && model_set->num_graded() > 0;
}

void PairMLIP::ensure_gamma(const char *who)
{
  gamma_monitor->evaluate(who, model_set->api(), model_set->models(), *graph_builder,
                          type_element);
}

bigint PairMLIP::graph_timestep() const
{
  return graph_builder->timestep();
}

const double *PairMLIP::atom_gamma() const
{
  return gamma_monitor->atom_gamma();
}

double PairMLIP::gamma_max() const
{
  return *gamma_monitor->max_gamma();
}

/* ----------------------------------------------------------------------
   fix pair support:  fix ID all pair N mlip gamma 1 [fdevi 1]
     gamma  per-atom extrapolation grade      (trigger gamma_flag)
     fdevi  per-atom committee force deviation (trigger fdevi_flag)
------------------------------------------------------------------------- */

void *PairMLIP::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, "gamma_flag") == 0) return (void *) gamma_monitor->trigger();
  if (strcmp(name, "fdevi_flag") == 0) return (void *) committee->trigger();
  if (strcmp(name, "gamma_max") == 0) return (void *) gamma_monitor->max_gamma();
  return nullptr;
}

void *PairMLIP::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  if (strcmp(name, "gamma") == 0) {
    if (model_set->loaded() && model_set->num_graded() == 0)
      error->all(FLERR, "pair_style mlip: per-atom 'gamma' requested, but no model carries an "
                        "active set");
    return (void *) gamma_monitor->atom_gamma();
  }
  if (strcmp(name, "fdevi") == 0) {
    if (model_files.size() < 2)
      error->all(FLERR, "pair_style mlip: per-atom 'fdevi' (force deviation) needs a committee "
                        "of two or more models");
    return (void *) committee->atom_deviation();
  }
  return nullptr;
}

/* ---------------------------------------------------------------------- */

double PairMLIP::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += graph_builder->memory_usage() + committee->memory_usage() +
      gamma_monitor->memory_usage() + feature_exchange->memory_usage();
  bytes += (double) (drive.atom_energy.capacity() + drive.forces.capacity() +
                     drive.atom_virial.capacity()) * sizeof(double);
  return bytes;
}
