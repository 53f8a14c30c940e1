// Native MTP evaluation (see mtp_kernel.h for why it exists).
//
// Per centre atom i (edges grouped by centre with a counting sort):
//   forward   per edge: r, û, Chebyshev T_k(ξ) and T'_k, Q_k = s·T_k·(rc − r)², f_μ = Σ_k c_{t_i t_j μ k} Q_k
//             and f'_μ; the monomials û^{(a,b,c)} of degree ≤ max_nu (one multiply each, MLIP order);
//             basic moments M_k += f_{μ_k} · mono_{m_k}
//             per atom: contractions M_c += m M_a M_b (rows ordered so a, b are final when read),
//             E_i = species_coeff + Σ_s moment_coeff_s M_{mapping_s}
//   reverse   per atom: G = ∂E_i/∂M by the contraction rows in reverse order
//             per edge: with H_m = Σ_{k: m_k = m} G_k f_{μ_k} and D = Σ_k G_k f'_{μ_k} mono_{m_k},
//             ∂E_i/∂r_ij = (D − Σ_m H_m ν_m mono_m / r) û + (1/r) Σ_m H_m ∇_û mono_m
//             (monomials are homogeneous of degree ν, so the tangential projection of ∇_û is the
//             Euler term −ν mono û).
#include "mtp_kernel.h"
#include "edge_scatter.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <tuple>

namespace mlip {

namespace {

struct MonoTable {
  std::vector<int> a, b, c, parent, dir;  // mono[m] = mono[parent[m]] * u[dir[m]] (m > 0)
  std::vector<int> dx, dy, dz;            // index of the monomial with a−1 (resp. b−1, c−1), or −1
  std::map<std::tuple<int, int, int>, int> index;
};

// Degree-major monomials, within a degree in the order mlip.models.mtp builds them:
// [prev·x (all of degree ν−1), last ν of prev · y, last one of prev · z].
MonoTable build_monomials(int max_nu) {
  MonoTable t;
  auto add = [&](int a, int b, int c, int parent, int dir) {
    t.index[{a, b, c}] = static_cast<int>(t.a.size());
    t.a.push_back(a);
    t.b.push_back(b);
    t.c.push_back(c);
    t.parent.push_back(parent);
    t.dir.push_back(dir);
  };
  add(0, 0, 0, -1, -1);
  int prev_begin = 0, prev_count = 1;
  for (int nu = 1; nu <= max_nu; ++nu) {
    const int begin = static_cast<int>(t.a.size());
    for (int k = 0; k < prev_count; ++k) {
      const int p = prev_begin + k;
      add(t.a[p] + 1, t.b[p], t.c[p], p, 0);
    }
    for (int k = prev_count - nu; k < prev_count; ++k) {
      const int p = prev_begin + k;
      add(t.a[p], t.b[p] + 1, t.c[p], p, 1);
    }
    {
      const int p = prev_begin + prev_count - 1;
      add(t.a[p], t.b[p], t.c[p] + 1, p, 2);
    }
    prev_begin = begin;
    prev_count = static_cast<int>(t.a.size()) - begin;
  }
  const int n = static_cast<int>(t.a.size());
  t.dx.assign(n, -1);
  t.dy.assign(n, -1);
  t.dz.assign(n, -1);
  for (int m = 0; m < n; ++m) {
    if (t.a[m] > 0) t.dx[m] = t.index.at({t.a[m] - 1, t.b[m], t.c[m]});
    if (t.b[m] > 0) t.dy[m] = t.index.at({t.a[m], t.b[m] - 1, t.c[m]});
    if (t.c[m] > 0) t.dz[m] = t.index.at({t.a[m], t.b[m], t.c[m] - 1});
  }
  return t;
}

}  // namespace

MTPKernel::MTPKernel(MTPParams p) : p_(std::move(p)) {
  n_basic_ = static_cast<int>(p_.basic_mu.size());
  const size_t S = static_cast<size_t>(p_.n_species);
  auto fail = [](const std::string& what) { throw std::invalid_argument("MTP parameters: " + what); };
  if (p_.n_species < 1 || p_.n_mu < 1 || p_.n_rb < 2 || p_.max_nu < 0) fail("bad sizes");
  if (p_.radial.size() != S * S * p_.n_mu * p_.n_rb) fail("radial coefficients have the wrong size");
  if (p_.species_coeffs.size() != S) fail("species coefficients have the wrong size");
  if (p_.moment_coeffs.size() != p_.mapping.size()) fail("moment coefficients and mapping differ");
  if (p_.basic_mono.size() != p_.basic_mu.size()) fail("basic moment tables differ in length");
  if (p_.n_moments < n_basic_) fail("fewer moments than basic moments");
  for (int k = 0; k < n_basic_; ++k) {
    if (p_.basic_mu[k] < 0 || p_.basic_mu[k] >= p_.n_mu) fail("basic moment radial index out of range");
  }
  for (size_t r = 0; r < p_.times_a.size(); ++r) {
    for (int x : {p_.times_a[r], p_.times_b[r], p_.times_c[r]})
      if (x < 0 || x >= p_.n_moments) fail("contraction index out of range");
  }
  for (int x : p_.mapping)
    if (x < 0 || x >= p_.n_moments) fail("basis function mapping out of range");
  if (!(p_.cutoff > p_.min_dist)) fail("cutoff must exceed min_dist");
  MonoTable mt = build_monomials(p_.max_nu);
  const int n_mono = static_cast<int>(mt.a.size());
  mono_parent_ = mt.parent;
  mono_dir_ = mt.dir;
  // index of the monomial with one power less; where the exponent is 0 (no such monomial) the
  // exponent factor is 0 anyway, so any valid index (0) will do and the loop needs no branch
  for (int m = 0; m < n_mono; ++m) {
    mono_dx_.push_back(std::max(mt.dx[m], 0));
    mono_dy_.push_back(std::max(mt.dy[m], 0));
    mono_dz_.push_back(std::max(mt.dz[m], 0));
  }
  for (int m = 0; m < n_mono; ++m) {
    mono_a_.push_back(mt.a[m]);
    mono_b_.push_back(mt.b[m]);
    mono_c_.push_back(mt.c[m]);
    mono_nu_.push_back(mt.a[m] + mt.b[m] + mt.c[m]);
  }
  for (int m : p_.basic_mono)
    if (m < 0 || m >= n_mono) fail("basic moment monomial index out of range");

  // group contraction rows by target, in order of first appearance
  std::map<int, int> group_of;
  std::vector<std::vector<int>> rows;
  for (size_t r = 0; r < p_.times_c.size(); ++r) {
    auto it = group_of.find(p_.times_c[r]);
    if (it == group_of.end()) {
      it = group_of.emplace(p_.times_c[r], static_cast<int>(rows.size())).first;
      rows.emplace_back();
      group_c_.push_back(p_.times_c[r]);
    }
    rows[it->second].push_back(static_cast<int>(r));
  }
  group_start_.push_back(0);
  for (const auto& g : rows) {
    for (int r : g) {
      row_a_.push_back(p_.times_a[r]);
      row_b_.push_back(p_.times_b[r]);
      row_m_.push_back(p_.times_m[r]);
    }
    group_start_.push_back(static_cast<int>(row_a_.size()));
  }

  // blocked layout?
  blocked_ = true;
  int pos = 0;
  for (int mu = 0; mu < p_.n_mu && blocked_; ++mu) {
    int len = 0;
    while (pos < n_basic_ && p_.basic_mu[pos] == mu) {
      if (p_.basic_mono[pos] != len) blocked_ = false;
      ++pos;
      ++len;
    }
    block_len_.push_back(len);
  }
  if (pos != n_basic_) blocked_ = false;
}

void MTPKernel::compute(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
                        const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec,
                        double* energy, double* atom_energy, double* forces, double* virial,
                        double* atom_virial) {
  const int n_mono = static_cast<int>(mono_parent_.size());
  const int* parent = mono_parent_.data();
  const int* dir = mono_dir_.data();
  const int* basic_mono = p_.basic_mono.data();
  const int* basic_mu = p_.basic_mu.data();
  const int S = p_.n_species, n_mu = p_.n_mu, n_rb = p_.n_rb;
  const double rc = p_.cutoff, rmin = p_.min_dist, scal = p_.scaling;
  const double dksi = 2.0 / (rc - rmin);
  const bool want_grad = forces || virial || atom_virial;
  const int n_groups = static_cast<int>(group_c_.size());
  const int *gc_ = group_c_.data(), *gs = group_start_.data(), *ra = row_a_.data(), *rb = row_b_.data();
  const double* rm = row_m_.data();
  const size_t n_map = p_.mapping.size();
  const int* mapping = p_.mapping.data();
  const double* mcoef = p_.moment_coeffs.data();

  // edges grouped by centre
  start_.assign(static_cast<size_t>(n_atoms) + 1, 0);
  for (int64_t e = 0; e < n_edges; ++e) start_[edge_i[e] + 1]++;
  for (int64_t a = 0; a < n_atoms; ++a) start_[a + 1] += start_[a];
  order_.resize(static_cast<size_t>(n_edges));
  {
    std::vector<int64_t> cursor(start_.begin(), start_.end() - 1);
    for (int64_t e = 0; e < n_edges; ++e) order_[cursor[edge_i[e]]++] = e;
  }

  if (forces) std::fill(forces, forces + 3 * n_atoms, 0.0);
  if (atom_virial) std::fill(atom_virial, atom_virial + 9 * n_atoms, 0.0);
  double w[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  double esum = 0.0;

  // Atoms go in blocks of kB: moments are stored [n_moments][kB], so the contraction program (the
  // bulk of the work at high levels) runs once per block with kB-wide vector arithmetic.
  constexpr int kB = 8;
  moments_.resize(static_cast<size_t>(p_.n_moments) * kB);
  grad_moments_.resize(static_cast<size_t>(p_.n_moments) * kB);
  std::vector<double> T(n_rb), dT(n_rb), H(n_mono), Gl(n_basic_);

  for (int64_t i0 = 0; i0 < n_atoms; i0 += kB) {
    const int nb = static_cast<int>(std::min<int64_t>(kB, n_atoms - i0));
    const int64_t e0 = start_[i0], ne = start_[i0 + nb] - e0;  // the block's edges, by centre
    if (ne == 0) {  // no neighbours (e.g. the LAMMPS ghost nodes of a local model): every moment is 0
      for (int l = 0; l < nb; ++l) {
        const int64_t i = i0 + l;
        const double ei = p_.species_coeffs[species[i]];
        if (atom_energy) atom_energy[i] = ei;
        if (i < n_local) esum += ei;
      }
      continue;
    }
    double* M = moments_.data();
    std::fill(moments_.begin(), moments_.end(), 0.0);
    edge_f_.resize(static_cast<size_t>(ne) * n_mu);
    edge_df_.resize(static_cast<size_t>(ne) * n_mu);
    edge_u_.resize(static_cast<size_t>(ne) * 3);
    edge_r_.resize(static_cast<size_t>(ne));
    edge_mono_.resize(static_cast<size_t>(ne) * n_mono);

    for (int l = 0; l < nb; ++l) {
      const int64_t i = i0 + l;
      const int ti = static_cast<int>(species[i]);
      for (int64_t q = start_[i] - e0; q < start_[i + 1] - e0; ++q) {
        const int64_t e = order_[e0 + q];
        const double* v = edge_vec + 3 * e;
        const double r = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
        if (!(r < rc) || r <= 0.0) {  // outside the cutoff: no contribution, no gradient
          edge_r_[q] = -1.0;
          continue;
        }
        edge_r_[q] = r;
        double* u = edge_u_.data() + 3 * q;
        u[0] = v[0] / r;
        u[1] = v[1] / r;
        u[2] = v[2] / r;
        const double ksi = (2.0 * r - (rmin + rc)) * (0.5 * dksi);
        T[0] = 1.0;
        T[1] = ksi;
        dT[0] = 0.0;
        dT[1] = 1.0;
        for (int k = 2; k < n_rb; ++k) {
          T[k] = 2.0 * ksi * T[k - 1] - T[k - 2];
          dT[k] = 2.0 * T[k - 1] + 2.0 * ksi * dT[k - 1] - dT[k - 2];
        }
        const double env = scal * (rc - r) * (rc - r), denv = -2.0 * scal * (rc - r);
        const int tj = static_cast<int>(species[edge_j[e]]);
        const double* coef = p_.radial.data() + static_cast<size_t>(ti * S + tj) * n_mu * n_rb;
        double* f = edge_f_.data() + q * n_mu;
        double* df = edge_df_.data() + q * n_mu;
        for (int mu = 0; mu < n_mu; ++mu) {
          const double* c = coef + mu * n_rb;
          double s = 0.0, ds = 0.0;
          for (int k = 0; k < n_rb; ++k) {
            s += c[k] * T[k];
            ds += c[k] * dT[k];
          }
          f[mu] = s * env;
          df[mu] = ds * dksi * env + s * denv;
        }
        double* mono = edge_mono_.data() + q * n_mono;
        mono[0] = 1.0;
        for (int m = 1; m < n_mono; ++m) mono[m] = mono[parent[m]] * u[dir[m]];
        if (blocked_) {
          double* Mb = M + l;
          for (int mu = 0; mu < n_mu; ++mu) {
            const double fm = f[mu];
            const int len = block_len_[mu];
            for (int m = 0; m < len; ++m) Mb[m * kB] += fm * mono[m];
            Mb += static_cast<size_t>(len) * kB;
          }
        } else {
          for (int k = 0; k < n_basic_; ++k) M[k * kB + l] += f[basic_mu[k]] * mono[basic_mono[k]];
        }
      }
    }

    for (int g = 0; g < n_groups; ++g) {
      double acc[kB] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int r = gs[g]; r < gs[g + 1]; ++r) {
        const double mr = rm[r];
        const double *xa = M + static_cast<size_t>(ra[r]) * kB, *xb = M + static_cast<size_t>(rb[r]) * kB;
#pragma omp simd
        for (int l = 0; l < kB; ++l) acc[l] += mr * xa[l] * xb[l];
      }
      double* xc = M + static_cast<size_t>(gc_[g]) * kB;
#pragma omp simd
      for (int l = 0; l < kB; ++l) xc[l] += acc[l];
    }
    bool any_local = false;
    for (int l = 0; l < nb; ++l) {
      const int64_t i = i0 + l;
      double ei = p_.species_coeffs[species[i]];
      for (size_t s = 0; s < n_map; ++s) ei += mcoef[s] * M[static_cast<size_t>(mapping[s]) * kB + l];
      if (atom_energy) atom_energy[i] = ei;
      if (i < n_local) {  // only local energies are summed: ghost centres get no gradient
        esum += ei;
        any_local = true;
      }
    }
    if (!want_grad || !any_local || ne == 0) continue;

    double* G = grad_moments_.data();
    std::fill(grad_moments_.begin(), grad_moments_.end(), 0.0);
    for (size_t s = 0; s < n_map; ++s)
      for (int l = 0; l < kB; ++l) G[static_cast<size_t>(mapping[s]) * kB + l] += mcoef[s];
    for (int g = n_groups; g-- > 0;) {
      const double* gcv = G + static_cast<size_t>(gc_[g]) * kB;
      for (int r = gs[g]; r < gs[g + 1]; ++r) {
        const double mr = rm[r];
        double *ga = G + static_cast<size_t>(ra[r]) * kB, *gb = G + static_cast<size_t>(rb[r]) * kB;
        const double *xa = M + static_cast<size_t>(ra[r]) * kB, *xb = M + static_cast<size_t>(rb[r]) * kB;
#pragma omp simd
        for (int l = 0; l < kB; ++l) {
          const double mg = mr * gcv[l];
          ga[l] += mg * xb[l];
          gb[l] += mg * xa[l];
        }
      }
    }

    for (int l = 0; l < nb; ++l) {
      const int64_t i = i0 + l;
      if (i >= n_local) continue;
      for (int k = 0; k < n_basic_; ++k) Gl[k] = G[static_cast<size_t>(k) * kB + l];  // contiguous copy
      for (int64_t q = start_[i] - e0; q < start_[i + 1] - e0; ++q) {
        const double r = edge_r_[q];
        if (r < 0.0) continue;
        const int64_t e = order_[e0 + q];
        const double* u = edge_u_.data() + 3 * q;
        const double* f = edge_f_.data() + q * n_mu;
        const double* df = edge_df_.data() + q * n_mu;
        const double* mono = edge_mono_.data() + q * n_mono;
        std::fill(H.begin(), H.end(), 0.0);
        double D = 0.0;
        if (blocked_) {
          const double* Gb = Gl.data();
          for (int mu = 0; mu < n_mu; ++mu) {
            const double fm = f[mu];
            const int len = block_len_[mu];
            double dot = 0.0;
#pragma omp simd reduction(+ : dot)
            for (int m = 0; m < len; ++m) {
              H[m] += fm * Gb[m];
              dot += Gb[m] * mono[m];
            }
            D += df[mu] * dot;
            Gb += len;
          }
        } else {
          for (int k = 0; k < n_basic_; ++k) {
            const double g = Gl[k];
            const int mu = basic_mu[k], m = basic_mono[k];
            H[m] += g * f[mu];
            D += g * df[mu] * mono[m];
          }
        }
        double gx = 0.0, gy = 0.0, gz = 0.0, euler = 0.0;
        const double *na = mono_a_.data(), *nbv = mono_b_.data(), *nc = mono_c_.data(), *nn = mono_nu_.data();
        const int *dx = mono_dx_.data(), *dy = mono_dy_.data(), *dz = mono_dz_.data();
#pragma omp simd reduction(+ : gx, gy, gz, euler)
        for (int m = 1; m < n_mono; ++m) {
          const double h = H[m];
          euler += h * nn[m] * mono[m];
          gx += h * na[m] * mono[dx[m]];
          gy += h * nbv[m] * mono[dy[m]];
          gz += h * nc[m] * mono[dz[m]];
        }
        const double radial = D - euler / r;
        const double g3[3] = {radial * u[0] + gx / r, radial * u[1] + gy / r, radial * u[2] + gz / r};
        scatter_edge_gradient(i, edge_j[e], edge_vec + 3 * e, g3, forces, w, atom_virial);
      }
    }
  }
  *energy = esum;
  if (virial) std::copy(w, w + 9, virial);
}

}  // namespace mlip
