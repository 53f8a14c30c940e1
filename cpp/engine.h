// mlip::Engine: runs an mlip TorchScript export (see docs/CONTRACT.md).
//
// This header deliberately does not include any torch header (pimpl), so that
// users (pybind11 module, C ABI) compile quickly and need no libtorch headers.
// Inside, the engine evaluates through a backend (cpp/backend.h): the export's
// TorchScript or, for our MTP and DP models, a verified native kernel.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlip {

class FeatureExchange;  // backend.h: ghost-row exchange between the layers of a message-passing model

// Edges shorter than this (Angstrom) are refused: two atoms at the same position (a zero-length edge
// makes every model singular). The LAMMPS plugin checks the same distance (MLIP_MIN_DISTANCE) to name
// LAMMPS atom IDs.
constexpr double MIN_DISTANCE = 1e-6;

// Bad input from the caller (shapes, indices, values): maps to ValueError.
class InputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Problem with the model file or inside the model: maps to RuntimeError.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Engine {
 public:
  // Loads `path`. num_threads <= 0: environment MLIP_NUM_THREADS, else 1; a count out of range (see
  // check_num_threads) is an InputError. The file's zip archive is checked first (check_archive in
  // archive_check.h: a damaged export is refused naming the entry). Throws ModelError with a short
  // message on failure.
  // device: "cpu" (default), "cuda", "cuda:N" or "auto" (cuda when libtorch sees a GPU, else cpu).
  // Off the CPU the export's TorchScript runs there (no native or layered backend); asking for a
  // CUDA device that is not there is a ModelError.
  explicit Engine(const std::string& path, int num_threads = 1, const std::string& device = "cpu");
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::string& path() const;
  const std::vector<std::string>& species() const;
  double cutoff() const;
  double interaction_range() const;
  const std::string& family() const;
  const std::string& units() const;
  const std::string& dtype() const;          // "float64" | "float32"
  int64_t format_version() const;            // -1 if absent
  const std::string& mlip_version() const;   // "" if absent
  const std::string& metadata_json() const;  // "{}" if the extra file is absent
  int num_threads() const;
  std::string device() const;  // where the model runs: "cpu", "cuda:0", …
  // "layered" (a message-passing export with the layer split, verified against its TorchScript at
  // load; graphs with ghosts but no exchange still run on the TorchScript), or
  // "native-mtp" / "native-deepmd" (mlip::MTPKernel / mlip::DPKernel; MLIP_BACKEND=torch turns
  // them off, and a kernel that does not reproduce the file's own TorchScript on a small test
  // cluster is not used: backend_factory.h) or "torchscript". The extrapolation grade always runs
  // the TorchScript `grade` method.
  const std::string& backend() const;

  // n_atoms nodes (locals first), species[n_atoms] model indices,
  // edges (edge_i[E], edge_j[E], edge_vec[3E]).
  // Outputs (caller-allocated): energy (sum over the first n_local atoms),
  // atom_energy[n_atoms], forces[3 n_atoms], virial[9] (row-major),
  // atom_virial[9 n_atoms] or nullptr to skip. Any output pointer except
  // `energy` may be nullptr to skip it.
  // Throws InputError (bad input, checked before torch sees it) or ModelError.
  // exchange (optional, message passing): the graph is one cutoff deep, with ghosts whose
  // features the caller exchanges between layers (docs/CONTRACT.md, "Layer split"); only for
  // supports_exchange() models: for a message-passing model without it, InputError.
  void compute(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
               const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec,
               double* energy, double* atom_energy, double* forces, double* virial,
               double* atom_virial, const FeatureExchange* exchange = nullptr);

  // True if the export has the layer split (it can run on a one-cutoff graph with an exchange).
  // Local models (interaction_range == cutoff) need no exchange and ignore one.
  bool supports_exchange() const;
  // The widest per-node row such an exchange carries (0 without the layer split).
  int64_t exchange_width() const;

  // True if the export carries a MaxVol active set (its scripted `grade` method returns values).
  bool has_grade() const;

  // Per-atom extrapolation grade of the first n_local atoms (same graph input as compute):
  // gamma[n_local] (caller-allocated). Throws ModelError if !has_grade(), InputError on bad input.
  void grade(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
             const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec, double* gamma,
             const FeatureExchange* exchange = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Thread counts (one rule for the ASE calculator, the LAMMPS plugin and the C ABI): an integer from 1
// to max_num_threads() = max(4 x the CPUs of this machine, 64). More threads than CPUs never speed up
// an evaluation, and thousands of them make libtorch's thread pool crash instead of failing cleanly.
int max_num_threads();
// n, or InputError "<what> must be an integer from 1 to <max> (this machine has <k> CPUs), got <n>".
int check_num_threads(long long n, const std::string& what = "num_threads");
// The text of a thread count (an environment variable, a keyword's value) as a checked count, or
// InputError "<what> must be an integer from 1 to <max> (...), got '<text>'".
int parse_num_threads(const std::string& text, const std::string& what);
// Number of threads used when num_threads <= 0: environment MLIP_NUM_THREADS (checked: InputError
// "environment variable MLIP_NUM_THREADS must be ..., got 'abc'") if set and not empty, else 1.
int default_num_threads();

}  // namespace mlip
