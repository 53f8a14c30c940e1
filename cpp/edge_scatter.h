// Shared by the native kernels: one edge's energy gradient g = dE/dr_ij (r_ij = x_j − x_i) into
// forces (F_i += g, F_j −= g), the virial (−r_ij ⊗ g) and per-atom virials (half to i, half to j),
// the conventions of docs/CONTRACT.md. Any output pointer may be null.
#pragma once

#include <cstdint>

namespace mlip {

inline void scatter_edge_gradient(int64_t i, int64_t j, const double* r_ij, const double* g, double* forces,
                                  double* virial9, double* atom_virial) {
  if (forces) {
    for (int c = 0; c < 3; ++c) {
      forces[3 * i + c] += g[c];
      forces[3 * j + c] -= g[c];
    }
  }
  if (virial9 || atom_virial) {
    for (int a = 0; a < 3; ++a) {
      for (int b = 0; b < 3; ++b) {
        const double x = -r_ij[a] * g[b];
        if (virial9) virial9[3 * a + b] += x;
        if (atom_virial) {
          atom_virial[9 * i + 3 * a + b] += 0.5 * x;
          atom_virial[9 * j + 3 * a + b] += 0.5 * x;
        }
      }
    }
  }
}

}  // namespace mlip
