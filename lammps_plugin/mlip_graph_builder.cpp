/* ----------------------------------------------------------------------
   pair_style mlip: edge graph from the LAMMPS neighbour list (see
   mlip_graph_builder.h for the layout the engine expects and why it is
   built once per force call).
------------------------------------------------------------------------- */

#include "mlip_graph_builder.h"

#include "atom.h"
#include "error.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <algorithm>
#include <cmath>

using namespace LAMMPS_NS;

namespace {

// pairs closer than this (Angstrom) are two atoms at the same position: the engine's
// mlip::MIN_DISTANCE (cpp/engine.h), checked here to name LAMMPS atom IDs
constexpr double MLIP_MIN_DISTANCE = 1e-6;

}    // namespace

std::string MLIPGraphBuilder::atom_name(int a) const
{
  if (atom->tag_enable) return fmt::format("atom ID {}", atom->tag[a]);
  return fmt::format("atom {} of this rank (no atom IDs)", a);
}

// a non-finite position, or two atoms (also periodic images) at the same place: one line naming
// the LAMMPS atom IDs (the engine would only know graph nodes)
void MLIPGraphBuilder::refuse_pair(int i, int j, double rsq) const
{
  double **x = atom->x;
  for (int a : {i, j})
    if (!std::isfinite(x[a][0]) || !std::isfinite(x[a][1]) || !std::isfinite(x[a][2]))
      error->one(FLERR, "pair_style mlip: {} has a non-finite position ({}, {}, {}) on step {}",
                 atom_name(a), x[a][0], x[a][1], x[a][2], update->ntimestep);
  const bool images = atom->tag_enable && atom->tag[i] == atom->tag[j];
  error->one(FLERR, "pair_style mlip: {} and {}{} are at the same position ({:.3g} A apart, closer "
                    "than {} A) on step {}", atom_name(i), atom_name(j),
             images ? " (a periodic image of itself)" : "", std::sqrt(rsq), MLIP_MIN_DISTANCE,
             update->ntimestep);
}

MLIPGraphBuilder::MLIPGraphBuilder(LAMMPS *lmp) :
    Pointers(lmp), cutsq(0.0), message_passing(false), exchange_fn(nullptr), exchange_ctx(nullptr),
    n_local(0), graph_serial(-1),
    graph_step(-1)
{
}

void MLIPGraphBuilder::setup(double cutoff, bool ghost_centres, const std::vector<double> &model_cutoffs,
                             MLIPExchangeFn exchange, void *ctx)
{
  cutsq = cutoff * cutoff;
  message_passing = ghost_centres;
  exchange_fn = exchange;
  exchange_ctx = ctx;
  subsets.assign(model_cutoffs.size(), EdgeSubset());
  for (size_t m = 0; m < model_cutoffs.size(); m++) {
    subsets[m].cutsq = model_cutoffs[m] * model_cutoffs[m];
    subsets[m].filtered = subsets[m].cutsq < cutsq * (1.0 - 1e-12);
  }
  atom_of.clear();
  n_local = 0;
  graph_serial = -1;
  graph_step = -1;
}

/* ---------------------------------------------------------------------- */

void MLIPGraphBuilder::build(NeighList *list, const std::vector<int> &type2species)
{
  double **x = atom->x;
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
    if (i < nlocal && type2species[type[i]] >= 0) {
      if (!std::isfinite(x[i][0]) || !std::isfinite(x[i][1]) || !std::isfinite(x[i][2]))
        refuse_pair(i, i, 0.0);
      add_node(i);
    }
  }
  n_local = (int64_t) atom_of.size();
  // message passing: ghost centres are nodes too (energies computed, not summed)
  for (int ii = inum; ii < inum + gnum; ii++) {
    int i = ilist[ii];
    if (type2species[type[i]] >= 0 && node_of[i] < 0) add_node(i);
  }

  // Local models: a ghost that is a periodic image of an atom owned by this rank becomes that
  // atom's node (edge_vec still uses the ghost's coordinates, so the image shift is exact). Its
  // force and virial then land on the owner directly, which is what the reverse communication
  // would have done, and the model evaluates fewer nodes (on one rank: only the local atoms).
  // Not on a deep ghost shell: its ghost centres carry their own (duplicate) edges. With the
  // per-layer feature exchange, folding is exact too (an image's features are its owner's), and on
  // one rank it leaves no ghost node at all: the exchange then has nothing to move.
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
      if (rsq >= cutsq) continue;
      if (!(rsq >= MLIP_MIN_DISTANCE * MLIP_MIN_DISTANCE)) refuse_pair(i, j, rsq);    // also NaN
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
}

/* ----------------------------------------------------------------------
   graph of model m: the whole graph, or (smaller cutoff) the edges shorter
   than its cutoff, in graph order
------------------------------------------------------------------------- */

MLIPGraphInput MLIPGraphBuilder::input(int m)
{
  MLIPGraphInput g;
  g.n_nodes = (int64_t) atom_of.size();
  g.n_local = n_local;
  g.species = species.data();
  g.exchange = exchange_fn;
  g.exchange_ctx = exchange_ctx;

  EdgeSubset &s = subsets[m];
  if (!s.filtered) {
    g.n_edges = (int64_t) edge_i.size();
    g.edge_i = edge_i.data();
    g.edge_j = edge_j.data();
    g.edge_vec = edge_vec.data();
    return g;
  }
  if (s.serial != graph_serial) {
    s.edge_i.clear();
    s.edge_j.clear();
    s.edge_vec.clear();
    const size_t n = edge_i.size();
    for (size_t e = 0; e < n; e++) {
      if (edge_rsq[e] >= s.cutsq) continue;
      s.edge_i.push_back(edge_i[e]);
      s.edge_j.push_back(edge_j[e]);
      s.edge_vec.insert(s.edge_vec.end(), &edge_vec[3 * e], &edge_vec[3 * e] + 3);
    }
    s.serial = graph_serial;
  }
  g.n_edges = (int64_t) s.edge_i.size();
  g.edge_i = s.edge_i.data();
  g.edge_j = s.edge_j.data();
  g.edge_vec = s.edge_vec.data();
  return g;
}

/* ---------------------------------------------------------------------- */

double MLIPGraphBuilder::memory_usage() const
{
  double bytes = (double) (node_of.capacity() + atom_of.capacity() + node_of_tag.capacity()) *
      sizeof(int);
  bytes += (double) (species.capacity() + edge_i.capacity() + edge_j.capacity()) *
      sizeof(int64_t);
  bytes += (double) (edge_vec.capacity() + edge_rsq.capacity()) * sizeof(double);
  for (const auto &s : subsets)
    bytes += (double) (s.edge_i.capacity() + s.edge_j.capacity()) * sizeof(int64_t) +
        (double) s.edge_vec.capacity() * sizeof(double);
  return bytes;
}
