// Native evaluation of an MTP export (family "mtp"): energies, forces and virials in plain C++.
//
// Why: an MTP is a few hundred multiply-adds per edge and per atom. Through TorchScript every one
// of those small steps is a tensor op with autograd bookkeeping, which made a trained Mo MTP several
// times slower than `pair_style snap` in LAMMPS. This kernel reads the very same parameters from the
// scripted module (no second file format, nothing can drift) and evaluates MLIP-2's formulas with a
// hand-written reverse pass (see docs/CONTRACT.md, "MTP native path"). It is always float64.
//
// The extrapolation grade stays on the TorchScript path: it runs every N steps only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlip {

struct MTPParams {
  int n_species = 0;
  int n_mu = 0;                 // radial functions
  int n_rb = 0;                 // radial basis size (Chebyshev polynomials)
  int max_nu = 0;               // highest monomial degree of a basic moment
  int n_moments = 0;            // basic + contracted moments
  double cutoff = 0.0, min_dist = 0.0, scaling = 1.0;
  std::vector<double> radial;   // [n_species, n_species, n_mu, n_rb]
  std::vector<double> species_coeffs;  // [n_species]
  std::vector<double> moment_coeffs;   // [n_alpha]
  std::vector<int> basic_mu;           // [n_basic] radial function of each basic moment
  std::vector<int> basic_mono;  // monomial of each basic moment: index into all monomials of û of
                                // degree 0..max_nu, degree-major, MLIP's order within a degree
                                // (mlip.models.mtp.MTP.edge_basic builds the same list)
  std::vector<int> times_a, times_b, times_c;  // M_c += m M_a M_b, in an order where a, b are final
  std::vector<double> times_m;
  std::vector<int> mapping;            // [n_alpha] moment index of each basis function
};

class MTPKernel {
 public:
  explicit MTPKernel(MTPParams p);

  // Same graph and output conventions as Engine::compute (forces F_i += g, F_j -= g with
  // g = dE/dr_ij; edge virial -r ⊗ g, split half/half between i and j for atom_virial).
  // All outputs except `energy` may be nullptr. energy = sum of atom energies of the first n_local.
  void compute(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
               const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec, double* energy,
               double* atom_energy, double* forces, double* virial, double* atom_virial);

 private:
  MTPParams p_;
  int n_basic_ = 0;
  // monomials of û (degree-major, MLIP order): mono[m] = mono[parent[m]] * u[dir[m]]; d{x,y,z}[m] =
  // index of the monomial with one power less of x (y, z) or -1; a, b, c its exponents
  std::vector<int> mono_parent_, mono_dir_, mono_dx_, mono_dy_, mono_dz_;
  std::vector<double> mono_a_, mono_b_, mono_c_, mono_nu_;
  // contractions grouped by target moment (group g: rows [group_start_[g], group_start_[g+1]) all
  // write group_c_[g]); groups keep the file's generation order, so a group only reads final moments
  std::vector<int> group_c_, group_start_, row_a_, row_b_;
  std::vector<double> row_m_;
  // MLIP's own layout of basic moments: per radial function μ a block of the first block_len_[μ]
  // monomials (then the per-edge loops are plain axpy / dot products); else the generic gathers
  bool blocked_ = false;
  std::vector<int> block_len_;
  // scratch, reused between calls (one engine = one thread at a time: Engine holds a mutex)
  std::vector<int64_t> order_, start_;
  std::vector<double> moments_, grad_moments_, edge_f_, edge_df_, edge_u_, edge_r_, edge_mono_;
};

}  // namespace mlip
