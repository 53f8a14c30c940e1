// O(N) cell-list neighbour search.
//
// Idea: work in fractional coordinates s = x B^-1 of a basis B whose rows are the
// periodic cell vectors, completed by unit vectors orthogonal to them along
// non-periodic directions (so a zero/degenerate cell is fine there). Along each
// direction d the bins have a perpendicular thickness t_d >= cutoff when possible;
// a neighbour can then be at most k_d = ceil(cutoff / t_d) bins away. For tiny
// periodic cells (height < cutoff) there is a single bin and k_d > 1: the bin
// offsets then enumerate the periodic images. Atoms are never moved: an atom's
// periodic bin is taken from its wrapped fractional coordinate and the integer
// offset is folded into the image shift, so unwrapped positions work.
#include "neighbor_list.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <thread>

#include "engine.h"  // InputError

namespace mlip {

namespace {

using Vec3 = std::array<double, 3>;
using Mat3 = std::array<Vec3, 3>;  // rows

Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
double norm(const Vec3& a) { return std::sqrt(dot(a, a)); }
Vec3 scale(const Vec3& a, double f) { return {a[0] * f, a[1] * f, a[2] * f}; }

// inverse of a 3x3 matrix (rows); the caller guarantees it is well conditioned
Mat3 inverse(const Mat3& m) {
  Vec3 c0 = cross(m[1], m[2]), c1 = cross(m[2], m[0]), c2 = cross(m[0], m[1]);
  double det = dot(m[0], c0);
  Mat3 inv;
  // inv[r][c] = cofactor(c, r) / det; columns of the inverse are the c_k / det
  for (int r = 0; r < 3; ++r) {
    inv[r][0] = c0[r] / det;
    inv[r][1] = c1[r] / det;
    inv[r][2] = c2[r] / det;
  }
  return inv;
}

// a unit vector orthogonal to a (nonzero)
Vec3 any_orthogonal(const Vec3& a) {
  int k = 0;  // axis least aligned with a
  for (int d = 1; d < 3; ++d)
    if (std::abs(a[d]) < std::abs(a[k])) k = d;
  Vec3 e{0, 0, 0};
  e[k] = 1.0;
  Vec3 o = cross(a, e);
  return scale(o, 1.0 / norm(o));
}

std::string fmt(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  int64_t q = a / b;
  if ((a % b != 0) && (a < 0)) --q;
  return q;
}

struct Edge {
  int64_t j;
  int64_t s[3];
  double v[3];
};

bool edge_less(const Edge& a, const Edge& b) {
  if (a.j != b.j) return a.j < b.j;
  if (a.s[0] != b.s[0]) return a.s[0] < b.s[0];
  if (a.s[1] != b.s[1]) return a.s[1] < b.s[1];
  return a.s[2] < b.s[2];
}

}  // namespace

NeighborList neighbor_list(const double* positions, int64_t n, const double* cell_in,
                           const bool pbc[3], double cutoff) {
  // ---------------- validation ----------------
  if (!std::isfinite(cutoff) || !(cutoff > 0.0)) {
    throw InputError("cutoff must be a positive finite number, got " + fmt(cutoff));
  }
  if (n < 0) throw InputError("number of atoms must be >= 0");
  for (int64_t a = 0; a < n; ++a) {
    for (int c = 0; c < 3; ++c) {
      if (!std::isfinite(positions[3 * a + c])) {
        throw InputError("position of atom " + std::to_string(a) + " is not finite (" +
                         fmt(positions[3 * a + c]) + ")");
      }
    }
  }
  Mat3 cell;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {
      cell[r][c] = cell_in[3 * r + c];
      if (pbc[r] && !std::isfinite(cell[r][c])) {
        throw InputError("cell vector " + std::to_string(r) + " is not finite");
      }
    }

  // only periodic rows are ever used (shifts are 0 elsewhere; avoid 0 * nan)
  for (int r = 0; r < 3; ++r)
    if (!pbc[r]) cell[r] = Vec3{0.0, 0.0, 0.0};

  NeighborList out;
  if (n == 0) return out;

  // ---------------- basis ----------------
  int n_periodic = 0;
  for (int d = 0; d < 3; ++d) n_periodic += pbc[d] ? 1 : 0;
  for (int d = 0; d < 3; ++d) {
    if (pbc[d] && !(norm(cell[d]) > 0.0)) {
      throw InputError("cell vector " + std::to_string(d) +
                       " is zero but the cell is periodic along it");
    }
  }
  Mat3 basis;
  const double rel_tol = 1e-10;
  if (n_periodic == 3) {
    double vol = std::abs(dot(cell[0], cross(cell[1], cell[2])));
    if (!(vol > rel_tol * norm(cell[0]) * norm(cell[1]) * norm(cell[2]))) {
      throw InputError("cell is singular: the periodic cell vectors are linearly dependent "
                       "(volume " + fmt(vol) + ")");
    }
    basis = cell;
  } else if (n_periodic == 2) {
    int a = -1, b = -1, c = -1;
    for (int d = 0; d < 3; ++d) {
      if (pbc[d]) (a < 0 ? a : b) = d;
      else c = d;
    }
    Vec3 nrm = cross(cell[a], cell[b]);
    if (!(norm(nrm) > rel_tol * norm(cell[a]) * norm(cell[b]))) {
      throw InputError("cell is singular: periodic cell vectors " + std::to_string(a) + " and " +
                       std::to_string(b) + " are parallel");
    }
    basis[a] = cell[a];
    basis[b] = cell[b];
    basis[c] = scale(nrm, 1.0 / norm(nrm));
  } else if (n_periodic == 1) {
    int a = pbc[0] ? 0 : (pbc[1] ? 1 : 2);
    Vec3 u = any_orthogonal(cell[a]);
    Vec3 v = cross(cell[a], u);
    v = scale(v, 1.0 / norm(v));
    basis[a] = cell[a];
    basis[(a + 1) % 3] = u;
    basis[(a + 2) % 3] = v;
  } else {
    basis = Mat3{Vec3{1, 0, 0}, Vec3{0, 1, 0}, Vec3{0, 0, 1}};
  }
  const Mat3 binv = inverse(basis);  // s = x binv (x a row vector)
  double height[3];
  for (int d = 0; d < 3; ++d) {
    Vec3 col{binv[0][d], binv[1][d], binv[2][d]};
    height[d] = 1.0 / norm(col);
  }

  // ---------------- fractional coordinates ----------------
  std::vector<double> frac(3 * n);
  std::vector<int64_t> offset(3 * n, 0);  // x = x_wrapped + offset @ cell
  double smin[3], smax[3];
  for (int d = 0; d < 3; ++d) {
    smin[d] = std::numeric_limits<double>::infinity();
    smax[d] = -std::numeric_limits<double>::infinity();
  }
  for (int64_t a = 0; a < n; ++a) {
    const double* x = positions + 3 * a;
    for (int d = 0; d < 3; ++d) {
      double s = x[0] * binv[0][d] + x[1] * binv[1][d] + x[2] * binv[2][d];
      if (pbc[d]) {
        double f = std::floor(s);
        if (std::abs(f) > 1e15) {
          throw InputError("atom " + std::to_string(a) + " is too far outside the cell");
        }
        offset[3 * a + d] = static_cast<int64_t>(f);
        s -= f;  // in [0, 1]; 1 only through rounding (handled by clamping the bin)
      }
      frac[3 * a + d] = s;
      smin[d] = std::min(smin[d], s);
      smax[d] = std::max(smax[d], s);
    }
  }

  // ---------------- bin grid ----------------
  // bins at least cutoff thick (with a tiny margin against rounding)
  const double bin_target = cutoff * (1.0 + 1e-9);
  int64_t nbins[3];
  double lo[3], width[3];  // bin index = floor((s - lo) / width)
  double extent[3];        // perpendicular size in Angstrom of the binned region
  for (int d = 0; d < 3; ++d) {
    if (pbc[d]) {
      lo[d] = 0.0;
      extent[d] = height[d];
    } else {
      lo[d] = smin[d];
      extent[d] = (smax[d] - smin[d]) * height[d];
    }
    double nb = std::floor(extent[d] / bin_target);
    nbins[d] = static_cast<int64_t>(std::max(1.0, std::min(nb, 1e6)));
  }
  // cap the number of bins (sparse clusters): coarser bins are always correct
  const int64_t max_bins = std::max<int64_t>(1024, 2 * n);
  while (nbins[0] * nbins[1] * nbins[2] > max_bins) {
    int d = 0;
    for (int e = 1; e < 3; ++e)
      if (nbins[e] > nbins[d]) d = e;
    nbins[d] = (nbins[d] + 1) / 2;
  }
  int64_t reach[3];  // max bin offset of a neighbour
  double n_offsets = 1.0;
  for (int d = 0; d < 3; ++d) {
    if (pbc[d]) {
      width[d] = 1.0 / nbins[d];
    } else {
      double span = smax[d] - smin[d];
      width[d] = span > 0 ? span / nbins[d] : 1.0;
    }
    double thickness = extent[d] / nbins[d];  // perpendicular bin thickness (Angstrom)
    double k = thickness > 0 ? std::ceil(cutoff / thickness * (1.0 + 1e-10)) : 0.0;
    if (!pbc[d]) k = std::min(k, static_cast<double>(nbins[d] - 1));
    if (k > 1e6) {
      throw InputError("cell is too thin along direction " + std::to_string(d) +
                       " for cutoff " + fmt(cutoff) + " (height " + fmt(height[d]) + ")");
    }
    reach[d] = static_cast<int64_t>(k);
    n_offsets *= 2.0 * k + 1.0;
  }
  if (n_offsets > 2e8) {
    throw InputError("cell is too small for cutoff " + fmt(cutoff) + ": about " + fmt(n_offsets) +
                     " periodic images per atom would be needed");
  }

  const int64_t total_bins = nbins[0] * nbins[1] * nbins[2];
  std::vector<int64_t> atom_bin(n);
  std::vector<int64_t> bin_start(total_bins + 1, 0);
  std::vector<int64_t> bin_coord(3 * n);
  for (int64_t a = 0; a < n; ++a) {
    int64_t b[3];
    for (int d = 0; d < 3; ++d) {
      double f = std::floor((frac[3 * a + d] - lo[d]) / width[d]);
      int64_t bi = f < 0 ? 0 : static_cast<int64_t>(std::min(f, 1e15));
      b[d] = std::min(bi, nbins[d] - 1);
      bin_coord[3 * a + d] = b[d];
    }
    atom_bin[a] = (b[0] * nbins[1] + b[1]) * nbins[2] + b[2];
    bin_start[atom_bin[a] + 1]++;
  }
  for (int64_t k = 0; k < total_bins; ++k) bin_start[k + 1] += bin_start[k];
  std::vector<int64_t> bin_atoms(n);
  {
    std::vector<int64_t> fill(bin_start.begin(), bin_start.end() - 1);
    for (int64_t a = 0; a < n; ++a) bin_atoms[fill[atom_bin[a]]++] = a;
  }

  // ---------------- search ----------------
  const double rc2 = cutoff * cutoff;
  auto search = [&](int64_t a_begin, int64_t a_end, std::vector<Edge>& edges,
                    std::vector<int64_t>& count) {
    std::vector<Edge> local;
    for (int64_t i = a_begin; i < a_end; ++i) {
      local.clear();
      const double* xi = positions + 3 * i;
      const int64_t* bi = &bin_coord[3 * i];
      const int64_t* oi = &offset[3 * i];
      for (int64_t d0 = -reach[0]; d0 <= reach[0]; ++d0) {
        int64_t B0 = bi[0] + d0, img0 = 0;
        if (pbc[0]) {
          img0 = floor_div(B0, nbins[0]);
          B0 -= img0 * nbins[0];
        } else if (B0 < 0 || B0 >= nbins[0]) {
          continue;
        }
        for (int64_t d1 = -reach[1]; d1 <= reach[1]; ++d1) {
          int64_t B1 = bi[1] + d1, img1 = 0;
          if (pbc[1]) {
            img1 = floor_div(B1, nbins[1]);
            B1 -= img1 * nbins[1];
          } else if (B1 < 0 || B1 >= nbins[1]) {
            continue;
          }
          for (int64_t d2 = -reach[2]; d2 <= reach[2]; ++d2) {
            int64_t B2 = bi[2] + d2, img2 = 0;
            if (pbc[2]) {
              img2 = floor_div(B2, nbins[2]);
              B2 -= img2 * nbins[2];
            } else if (B2 < 0 || B2 >= nbins[2]) {
              continue;
            }
            const int64_t bin = (B0 * nbins[1] + B1) * nbins[2] + B2;
            const int64_t img[3] = {img0, img1, img2};
            for (int64_t p = bin_start[bin]; p < bin_start[bin + 1]; ++p) {
              const int64_t j = bin_atoms[p];
              const int64_t* oj = &offset[3 * j];
              int64_t S[3];
              for (int d = 0; d < 3; ++d) S[d] = pbc[d] ? img[d] - oj[d] + oi[d] : 0;
              if (j == i && S[0] == 0 && S[1] == 0 && S[2] == 0) continue;
              const double* xj = positions + 3 * j;
              double r[3];
              for (int c = 0; c < 3; ++c) {
                r[c] = xj[c] - xi[c] + S[0] * cell[0][c] + S[1] * cell[1][c] + S[2] * cell[2][c];
              }
              const double r2 = r[0] * r[0] + r[1] * r[1] + r[2] * r[2];
              if (r2 < rc2 && r2 > 0.0) {
                local.push_back(Edge{j, {S[0], S[1], S[2]}, {r[0], r[1], r[2]}});
              }
            }
          }
        }
      }
      std::sort(local.begin(), local.end(), edge_less);
      edges.insert(edges.end(), local.begin(), local.end());
      count[i] = static_cast<int64_t>(local.size());
    }
  };

  std::vector<int64_t> count(n, 0);
  // two chunks in parallel for larger systems (the machines have 2+ cores)
  unsigned hw = std::thread::hardware_concurrency();
  int n_chunks = (n >= 2000 && hw >= 2) ? 2 : 1;
  std::vector<std::vector<Edge>> chunk_edges(n_chunks);
  if (n_chunks == 1) {
    search(0, n, chunk_edges[0], count);
  } else {
    int64_t mid = n / 2;
    std::thread t([&] { search(mid, n, chunk_edges[1], count); });
    try {
      search(0, mid, chunk_edges[0], count);
    } catch (...) {
      t.join();
      throw;
    }
    t.join();
  }

  // ---------------- output ----------------
  size_t n_edges = 0;
  for (auto& ce : chunk_edges) n_edges += ce.size();
  out.edge_i.resize(n_edges);
  out.edge_j.resize(n_edges);
  out.shifts.resize(3 * n_edges);
  out.edge_vec.resize(3 * n_edges);
  size_t e = 0;
  int64_t i = 0, left = 0;
  for (auto& ce : chunk_edges) {
    for (const Edge& ed : ce) {
      while (left == 0) left = count[i++];
      out.edge_i[e] = i - 1;
      --left;
      out.edge_j[e] = ed.j;
      for (int c = 0; c < 3; ++c) {
        out.shifts[3 * e + c] = ed.s[c];
        out.edge_vec[3 * e + c] = ed.v[c];
      }
      ++e;
    }
    std::vector<Edge>().swap(ce);
  }
  return out;
}

}  // namespace mlip
