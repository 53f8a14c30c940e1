// Validation of the caller's graph and its tensor marshalling (see graph_input.h for why).
#include "graph_input.h"

#include <ATen/Parallel.h>

#include "engine.h"  // InputError, ModelError

#include <ATen/ops/empty.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>

namespace mlip {

void validate_graph(const GraphInput& g, int64_t n_species) {
  const int64_t n_atoms = g.n_atoms, n_local = g.n_local, n_edges = g.n_edges;
  const int64_t* species = g.species;
  const int64_t* edge_i = g.edge_i;
  const int64_t* edge_j = g.edge_j;
  const double* edge_vec = g.edge_vec;
  if (n_atoms < 0) throw InputError("n_atoms must be >= 0, got " + std::to_string(n_atoms));
  if (n_local < 0 || n_local > n_atoms) {
    throw InputError("n_local must be in [0, n_atoms=" + std::to_string(n_atoms) + "], got " +
                     std::to_string(n_local));
  }
  if (n_edges < 0) throw InputError("n_edges must be >= 0, got " + std::to_string(n_edges));
  if (n_atoms > 0 && !species) throw InputError("species pointer is NULL");
  if (n_edges > 0 && (!edge_i || !edge_j || !edge_vec)) throw InputError("edge pointer is NULL");
  const int64_t ns = n_species;
  for (int64_t a = 0; a < n_atoms; ++a) {
    if (species[a] < 0 || species[a] >= ns) {
      throw InputError("atom " + std::to_string(a) + " has species index " +
                       std::to_string(species[a]) + ", out of range [0, " + std::to_string(ns) +
                       ") for a model of " + std::to_string(ns) + " species");
    }
  }
  for (int64_t e = 0; e < n_edges; ++e) {
    for (int side = 0; side < 2; ++side) {
      const int64_t a = side == 0 ? edge_i[e] : edge_j[e];
      if (a < 0 || a >= n_atoms) {
        throw InputError("edge " + std::to_string(e) + " has atom index " + std::to_string(a) +
                         " (" + (side == 0 ? "i" : "j") + "), out of range [0, " +
                         std::to_string(n_atoms) + ")");
      }
    }
    const double* v = edge_vec + 3 * e;
    const double rsq = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    if (!(rsq >= MIN_DISTANCE * MIN_DISTANCE) || !std::isfinite(rsq)) {  // NaN fails the first test
      if (!std::isfinite(rsq)) {
        throw InputError("edge " + std::to_string(e) + " (atoms " + std::to_string(edge_i[e]) +
                         ", " + std::to_string(edge_j[e]) + ") has a non-finite edge vector");
      }
      char dist[64];
      std::snprintf(dist, sizeof dist, "%.3g A apart, closer than %g A", std::sqrt(rsq), MIN_DISTANCE);
      throw InputError("atoms " + std::to_string(edge_i[e]) + " and " + std::to_string(edge_j[e]) +
                       " are at the same position (" + dist + "; edge " + std::to_string(e) + ")");
    }
  }
}

GraphTensors graph_tensors(const GraphInput& g, at::ScalarType dtype) {
  const int64_t n_atoms = g.n_atoms, n_edges = g.n_edges;
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  GraphTensors t;
  t.species = at::empty({n_atoms}, i64);
  if (n_atoms > 0) std::memcpy(t.species.data_ptr<int64_t>(), g.species, sizeof(int64_t) * n_atoms);
  t.edge_index = at::empty({2, n_edges}, i64);
  t.edge_vec = at::empty({n_edges, 3}, at::TensorOptions().dtype(at::kDouble));
  if (n_edges > 0) {
    std::memcpy(t.edge_index.data_ptr<int64_t>(), g.edge_i, sizeof(int64_t) * n_edges);
    std::memcpy(t.edge_index.data_ptr<int64_t>() + n_edges, g.edge_j, sizeof(int64_t) * n_edges);
    std::memcpy(t.edge_vec.data_ptr<double>(), g.edge_vec, sizeof(double) * 3 * n_edges);
  }
  if (dtype != at::kDouble) t.edge_vec = t.edge_vec.to(dtype);
  return t;
}

void check_shape(const at::Tensor& t, std::vector<int64_t> expected, const char* name) {
  bool ok = t.dim() == static_cast<int64_t>(expected.size());
  for (size_t k = 0; ok && k < expected.size(); ++k) ok = t.size(k) == expected[k];
  if (!ok) {
    std::ostringstream msg;
    msg << "model returned " << name << " with shape " << t.sizes() << ", expected "
        << c10::IntArrayRef(expected);
    throw ModelError(msg.str());
  }
}

ScriptCallScope::ScriptCallScope(int num_threads, bool optimize, bool grad) : grad_(grad), optimize_(optimize) {
  if (at::get_num_threads() != num_threads) at::set_num_threads(num_threads);
}

void copy_out(const at::Tensor& t, double* out) {
  auto d = t.detach().to(c10::kCPU, at::kDouble).contiguous();
  std::memcpy(out, d.data_ptr<double>(), sizeof(double) * static_cast<size_t>(d.numel()));
}

}  // namespace mlip
