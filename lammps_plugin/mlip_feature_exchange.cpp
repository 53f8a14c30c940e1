/* ----------------------------------------------------------------------
   pair_style mlip: per-layer feature exchange (see mlip_feature_exchange.h)
------------------------------------------------------------------------- */

#include "mlip_feature_exchange.h"

#include "pair_mlip.h"

#include "atom.h"

#include <algorithm>
#include <cstring>

using namespace LAMMPS_NS;

MLIPFeatureExchange::MLIPFeatureExchange(LAMMPS *lmp, PairMLIP *p, const MLIPGraphBuilder &g) :
    Pointers(lmp), pair(p), graph(g), width(0)
{
}

int MLIPFeatureExchange::callback(void *ctx, int reverse, int64_t width, double *node_rows)
{
  auto *self = static_cast<MLIPFeatureExchange *>(ctx);
  self->width = (int) width;
  if (reverse)
    self->reverse(node_rows);
  else
    self->forward(node_rows);
  return 0;
}

// owners' rows -> their atoms, forward communication, ghost atoms -> ghost nodes
void MLIPFeatureExchange::forward(double *node_rows)
{
  const std::vector<int> &atom_of = graph.node_atoms();
  const int64_t n_nodes = graph.num_nodes(), n_local = graph.num_local();
  const size_t nall = (size_t) atom->nlocal + atom->nghost;
  if (rows.size() < nall * width) rows.resize(nall * width);
  for (int64_t k = 0; k < n_local; k++)
    std::memcpy(&rows[(size_t) atom_of[k] * width], node_rows + k * width, sizeof(double) * width);
  pair->exchange_rows(this, false);
  for (int64_t k = n_local; k < n_nodes; k++)
    std::memcpy(node_rows + k * width, &rows[(size_t) atom_of[k] * width], sizeof(double) * width);
}

// ghost nodes' rows -> their atoms, reverse communication, owners' sums -> local nodes
void MLIPFeatureExchange::reverse(double *node_rows)
{
  const std::vector<int> &atom_of = graph.node_atoms();
  const int64_t n_nodes = graph.num_nodes(), n_local = graph.num_local();
  const size_t nall = (size_t) atom->nlocal + atom->nghost;
  if (rows.size() < nall * width) rows.resize(nall * width);
  std::fill(rows.begin(), rows.begin() + nall * width, 0.0);
  for (int64_t k = n_local; k < n_nodes; k++)
    std::memcpy(&rows[(size_t) atom_of[k] * width], node_rows + k * width, sizeof(double) * width);
  pair->exchange_rows(this, true);
  for (int64_t k = 0; k < n_local; k++) {
    const double *src = &rows[(size_t) atom_of[k] * width];
    double *dst = node_rows + k * width;
    for (int c = 0; c < width; c++) dst[c] += src[c];
  }
}

int MLIPFeatureExchange::pack_forward(int n, const int *list, double *buf)
{
  for (int i = 0; i < n; i++)
    std::memcpy(buf + (size_t) i * width, &rows[(size_t) list[i] * width], sizeof(double) * width);
  return n * width;
}

void MLIPFeatureExchange::unpack_forward(int n, int first, const double *buf)
{
  std::memcpy(&rows[(size_t) first * width], buf, sizeof(double) * width * n);
}

int MLIPFeatureExchange::pack_reverse(int n, int first, double *buf)
{
  std::memcpy(buf, &rows[(size_t) first * width], sizeof(double) * width * n);
  return n * width;
}

void MLIPFeatureExchange::unpack_reverse(int n, const int *list, const double *buf)
{
  for (int i = 0; i < n; i++) {
    double *dst = &rows[(size_t) list[i] * width];
    const double *src = buf + (size_t) i * width;
    for (int c = 0; c < width; c++) dst[c] += src[c];
  }
}
