// Backend choice and the native-vs-TorchScript check (see backend_factory.h for why).
#include "backend_factory.h"

#include "engine.h"  // ModelError
#include "native_backends.h"
#include "torch_errors.h"

#include <c10/util/Exception.h>
#include <torch/csrc/jit/api/module.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <vector>

namespace mlip {

std::unique_ptr<Backend> make_native_backend(const torch::jit::Module& module, const std::string& family,
                                             const std::string& path, int num_threads) {
  if (family != "mtp" && family != "deepmd") return nullptr;
  const char* be = std::getenv("MLIP_BACKEND");
  const std::string want = be && *be ? be : "native";
  if (want != "native" && want != "torch") {
    throw ModelError("MLIP_BACKEND must be 'native' or 'torch', got '" + want + "'");
  }
  // native only for our own model classes (a hand-written export may claim a family name)
  const bool ours = family == "mtp" ? MTPBackend::accepts(module) : DPBackend::accepts(module);
  if (want != "native" || !ours) return nullptr;
  try {
    if (family == "mtp") return std::make_unique<MTPBackend>(module);
    return std::make_unique<DPBackend>(module, num_threads);
  } catch (const c10::Error& e) {
    throw ModelError(quoted_path(path) + ": cannot read the " + family + " parameters (" + torch_message(e) + ")");
  } catch (const std::invalid_argument& e) {
    throw ModelError(quoted_path(path) + ": " + e.what());
  } catch (const std::exception& e) {
    throw ModelError(quoted_path(path) + ": cannot read the " + family + " parameters (" +
                     torch_message(std::string(e.what())) + ")");
  }
}

bool native_matches_reference(Backend& native, Backend& reference, int64_t n_species, double cutoff,
                              bool float64) {
  // n atoms on a slightly irregular, puckered ring of radius 0.35 cutoff: every pair is an edge,
  // every species occurs, and no symmetry hides a wrong sign
  const int64_t n = std::max<int64_t>(3, n_species);
  const double R = 0.35 * cutoff, pi = 3.14159265358979323846;
  std::vector<double> pos(3 * n);
  std::vector<int64_t> sp(n), ei, ej;
  std::vector<double> ev;
  for (int64_t k = 0; k < n; ++k) {
    const double th = 2.0 * pi * static_cast<double>(k) / static_cast<double>(n) + 0.1 * k;
    pos[3 * k] = R * std::cos(th);
    pos[3 * k + 1] = R * std::sin(th);
    pos[3 * k + 2] = 0.2 * R * std::sin(3.0 * th);
    sp[k] = k % n_species;
  }
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      if (a == b) continue;
      double d[3], r2 = 0.0;
      for (int c = 0; c < 3; ++c) {
        d[c] = pos[3 * b + c] - pos[3 * a + c];
        r2 += d[c] * d[c];
      }
      if (r2 >= cutoff * cutoff) continue;
      ei.push_back(a);
      ej.push_back(b);
      ev.insert(ev.end(), d, d + 3);
    }
  GraphInput g;
  g.n_atoms = n;
  g.n_local = n;
  g.species = sp.data();
  g.n_edges = static_cast<int64_t>(ei.size());
  g.edge_i = ei.data();
  g.edge_j = ej.data();
  g.edge_vec = ev.data();
  double e_nat = 0.0, e_ts = 0.0;
  std::vector<double> f_nat(3 * n), f_ts(3 * n), w_nat(9), w_ts(9);
  Outputs out_nat, out_ts;
  out_nat.energy = &e_nat;
  out_nat.forces = f_nat.data();
  out_nat.virial = w_nat.data();
  out_ts.energy = &e_ts;
  out_ts.forces = f_ts.data();
  out_ts.virial = w_ts.data();
  native.compute(g, out_nat);
  reference.compute(g, out_ts);
  double fmax = 1e-12, df = 0.0;
  for (int64_t k = 0; k < 3 * n; ++k) {
    fmax = std::max(fmax, std::fabs(f_ts[k]));
    df = std::max(df, std::fabs(f_nat[k] - f_ts[k]));
  }
  const double tol = float64 ? 1e-9 : 1e-3;
  return std::fabs(e_nat - e_ts) <= tol * std::max(1.0, std::fabs(e_ts)) && df <= tol * std::max(1.0, fmax);
}

}  // namespace mlip
