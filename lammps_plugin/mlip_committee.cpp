/* ----------------------------------------------------------------------
   pair_style mlip: committee model deviation and its output file (see
   mlip_committee.h for the protocol and the definitions).

   File format (rank 0, DeePMD-kit's columns plus devi_e, LAMMPS units):
     #       step          max_devi_v ... avg_devi_f              devi_e
   one line per evaluated step that is a multiple of out_freq, each step at
   most once; the file is truncated at its first write after pair_style.
------------------------------------------------------------------------- */

#include "mlip_committee.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "memory.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

using namespace LAMMPS_NS;

MLIPCommittee::MLIPCommittee(LAMMPS *lmp) :
    Pointers(lmp), out_freq(0), out_file("model_devi.out"), fp(nullptr), fdevi_trigger(0),
    last_step(-1), nmodels(0), fdevi_atom(nullptr), nmax(0)
{
}

MLIPCommittee::~MLIPCommittee()
{
  if (fp) fclose(fp);
  memory->destroy(fdevi_atom);
}

void MLIPCommittee::configure(int every, const std::string &file)
{
  out_freq = every;
  out_file = file;
  if (fp) fclose(fp);
  fp = nullptr;
  last_step = -1;
}

bool MLIPCommittee::due(bigint step) const
{
  return (out_freq > 0 && step % out_freq == 0) || fdevi_trigger;
}

/* ---------------------------------------------------------------------- */

void MLIPCommittee::gather_forces(const MLIPEngineAPI &api, const std::vector<MLIPModel> &models,
                                  MLIPGraphBuilder &graph, const MLIPResult &first, double s)
{
  const int M = (int) models.size();
  const int stride = 3 * M;
  const int nall = atom->nlocal + atom->nghost;
  const std::vector<int> &atom_of = graph.node_atoms();
  const int64_t n_nodes = graph.num_nodes();

  nmodels = M;
  rows.assign((size_t) nall * stride, 0.0);
  ew.assign(10 * M, 0.0);
  auto scatter = [&](int m, const MLIPResult &r) {
    for (int64_t k = 0; k < n_nodes; k++) {
      double *b = &rows[(size_t) atom_of[k] * stride + 3 * m];
      b[0] += s * r.forces[3 * k];
      b[1] += s * r.forces[3 * k + 1];
      b[2] += s * r.forces[3 * k + 2];
    }
    ew[m] = s * r.energy;
    for (int c = 0; c < 9; c++) ew[M + 9 * m + c] = s * r.virial[c];
  };
  scatter(0, first);
  for (int m = 1; m < M; m++) {
    char msg[MLIP_ERRLEN] = {0};
    if (api.evaluate(models[m].engine, graph.input(m), scratch, false, msg) != 0)
      error->one(FLERR, "pair_style mlip: evaluating committee model '{}' failed on step {}: {}",
                 models[m].path, update->ntimestep, msg);
    scatter(m, scratch);
  }
}

int MLIPCommittee::pack_reverse(int n, int first, double *buf)
{
  const int stride = 3 * nmodels;
  int m = 0;
  for (int i = first; i < first + n; i++) {
    const double *b = &rows[(size_t) i * stride];
    for (int c = 0; c < stride; c++) buf[m++] = b[c];
  }
  return m;
}

void MLIPCommittee::unpack_reverse(int n, const int *list, const double *buf)
{
  const int stride = 3 * nmodels;
  int m = 0;
  for (int i = 0; i < n; i++) {
    double *b = &rows[(size_t) list[i] * stride];
    for (int c = 0; c < stride; c++) b[c] += buf[m++];
  }
}

/* ---------------------------------------------------------------------- */

void MLIPCommittee::finish(const std::vector<int> &type2species)
{
  const int M = nmodels;
  const int stride = 3 * M;
  const int nlocal = atom->nlocal;
  int *type = atom->type;

  if (atom->nmax > nmax || !fdevi_atom) {
    nmax = std::max(atom->nmax, 1);
    memory->destroy(fdevi_atom);
    memory->create(fdevi_atom, nmax, "pair:mlip:fdevi");
    for (int i = 0; i < nmax; i++) fdevi_atom[i] = 0.0;
  }

  double fmax = 0.0, fmin = DBL_MAX, fsum = 0.0;
  bigint count = 0;
  for (int i = 0; i < nlocal; i++) {
    fdevi_atom[i] = 0.0;
    if (type2species[type[i]] < 0) continue;
    const double *b = &rows[(size_t) i * stride];
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
  const bool write = out_freq > 0 && step % out_freq == 0 && step != last_step;
  last_step = step;
  if (!write || comm->me != 0) return;

  const double n = natoms > 0 ? (double) natoms : 1.0;
  if (natoms == 0) gmin = 0.0;
  write_line(step, ew_all, gmax, gmin, gsum / n, n);
}

// rank 0: energy/virial deviations of the reduced totals, then one line of the file
void MLIPCommittee::write_line(bigint step, const std::vector<double> &ew_all, double fmax,
                               double fmin, double favg, double n)
{
  const int M = nmodels;
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

  if (!fp) {
    fp = fopen(out_file.c_str(), "w");
    if (!fp)
      error->one(FLERR, "pair_style mlip: cannot open model deviation file '{}': {}", out_file,
                 utils::getsyserror());
    fprintf(fp, "#%11s %19s %19s %19s %19s %19s %19s %19s\n", "step", "max_devi_v",
            "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e");
  }
  fprintf(fp, "%12lld %19.12e %19.12e %19.12e %19.12e %19.12e %19.12e %19.12e\n",
          (long long) step, vmax, vmin, vavg, fmax, fmin, favg, devi_e);
  fflush(fp);
}

double MLIPCommittee::memory_usage() const
{
  return (double) (rows.capacity() + ew.capacity() + scratch.atom_energy.capacity() +
                   scratch.forces.capacity()) * sizeof(double) +
      (double) nmax * sizeof(double);
}
