// O(N) cell-list neighbour search (full list, all periodic images), see docs/CONTRACT.md.
#pragma once

#include <cstdint>
#include <vector>

namespace mlip {

struct NeighborList {
  std::vector<int64_t> edge_i;  // [E] centre atom
  std::vector<int64_t> edge_j;  // [E] neighbour atom
  std::vector<int64_t> shifts;  // [E*3] integer image shift (0 along non-periodic directions)
  std::vector<double> edge_vec; // [E*3] x[j] - x[i] + shifts @ cell
};

// positions: [n*3] row-major; cell: [9] row-major, rows = cell vectors (only the rows of
// periodic directions are used; the others may be zero); pbc[3]; cutoff > 0.
// Edges: every (i, j, shift) with 0 < |r| < cutoff, sorted by i, then j, then shift.
// Throws mlip::InputError (std::invalid_argument) for bad input.
NeighborList neighbor_list(const double* positions, int64_t n, const double* cell,
                           const bool pbc[3], double cutoff);

}  // namespace mlip
