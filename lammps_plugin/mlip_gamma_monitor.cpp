/* ----------------------------------------------------------------------
   pair_style mlip: extrapolation grade, gamma_select / gamma_break and the
   extended-XYZ writer (see mlip_gamma_monitor.h for why this is separate).

   Selection file (rank 0 gathers, one frame per selected step, appended):
     line 1   number of atoms
     line 2   Lattice="ax 0 0 bx by 0 cx cy cz" (LAMMPS box: a = (lx,0,0),
              b = (xy,ly,0), c = (xz,yz,lz))
              Properties=species:S:1:pos:R:3:id:I:1:gamma:R:1 pbc="T T T"
              step=N gamma=<max gamma>
     per atom (sorted by atom ID) element (model species, X for types not
              handled by mlip), position relative to the box origin, atom ID,
              gamma
   Readable by ase.io.read(FILE, ":").
------------------------------------------------------------------------- */

#include "mlip_gamma_monitor.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "memory.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <cstdio>

using namespace LAMMPS_NS;

MLIPGammaMonitor::MLIPGammaMonitor(LAMMPS *lmp) :
    Pointers(lmp), every(0), select(0.0), brk(0.0), select_started(false), gamma_trigger(0),
    gamma_serial(-1), checked_step(-1), gamma_atom(nullptr), nmax(0), gamma_global(0.0)
{
}

MLIPGammaMonitor::~MLIPGammaMonitor()
{
  memory->destroy(gamma_atom);
}

void MLIPGammaMonitor::configure(int every_n, bool every_given, double select_g,
                                 const std::string &file, double break_g)
{
  every = every_n;
  select = select_g;
  select_file = file;
  brk = break_g;
  if (!every_given && (select > 0.0 || brk > 0.0)) every = 1;
  select_started = false;
  checked_step = -1;
  gamma_serial = -1;
}

bool MLIPGammaMonitor::due(bigint step) const
{
  return (every > 0 && step % every == 0) || gamma_trigger;
}

/* ---------------------------------------------------------------------- */

void MLIPGammaMonitor::evaluate(const char *who, const MLIPEngineAPI *api,
                                const std::vector<MLIPModel> &models, MLIPGraphBuilder &graph,
                                const std::vector<std::string> &type_element)
{
  bool any_graded = false;
  for (const auto &m : models) any_graded = any_graded || m.graded;
  if (!api || !any_graded)
    error->all(FLERR, "{}: none of the models of pair_style mlip carries an active set (export "
                      "the model with one to get the extrapolation grade)", who);
  if (graph.serial() < 0)
    error->all(FLERR, "{}: pair_style mlip has not computed forces yet", who);
  if (gamma_serial == graph.serial()) return;

  if (atom->nmax > nmax || !gamma_atom) {
    nmax = std::max(atom->nmax, 1);
    memory->destroy(gamma_atom);
    memory->create(gamma_atom, nmax, "pair:mlip:gamma");
    for (int i = 0; i < nmax; i++) gamma_atom[i] = 0.0;
  }
  const int nlocal = atom->nlocal;
  for (int i = 0; i < nlocal; i++) gamma_atom[i] = 0.0;
  const std::vector<int> &atom_of = graph.node_atoms();
  const int64_t n_local = graph.num_local();
  gamma_buf.resize(n_local);
  if (n_local > 0) {
    for (int m = 0; m < (int) models.size(); m++) {
      if (!models[m].graded) continue;
      char msg[MLIP_ERRLEN] = {0};
      if (api->evaluate_grade(models[m].engine, graph.input(m), gamma_buf.data(), msg) != 0)
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
  gamma_serial = graph.serial();
  check_thresholds(graph.timestep(), type_element);
}

void MLIPGammaMonitor::check_thresholds(bigint graph_step,
                                        const std::vector<std::string> &type_element)
{
  if (select <= 0.0 && brk <= 0.0) return;
  if (graph_step == checked_step) return;    // e.g. step 0 seen again by a second run
  checked_step = graph_step;
  const double g = gamma_global;
  if (select > 0.0 && g > select) write_selected(g, type_element);
  if (brk > 0.0 && g > brk) {
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
               g, out.tag, brk, update->ntimestep,
               select > 0.0 ? fmt::format(" The configuration was appended to '{}'.", select_file)
                            : std::string());
  }
}

/* ----------------------------------------------------------------------
   append the current configuration to select_file (format in the header)
------------------------------------------------------------------------- */

void MLIPGammaMonitor::write_selected(double gmax, const std::vector<std::string> &type_element)
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
    const char *el = (t >= 1 && t < (int) type_element.size()) ? type_element[t].c_str() : "X";
    fprintf(fp, "%s %.17g %.17g %.17g %lld %.17g\n", el, b[2], b[3], b[4], (long long) b[0],
            b[5]);
  }
  fclose(fp);
}

double MLIPGammaMonitor::memory_usage() const
{
  return (double) nmax * sizeof(double) + (double) gamma_buf.capacity() * sizeof(double);
}
