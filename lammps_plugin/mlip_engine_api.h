/* -*- c++ -*- ----------------------------------------------------------
   pair_style mlip: the C ABI of mlip's C++ engine, loaded at run time.

   Why this file exists: the pair style must not link libtorch. It dlopen()s
   libmlip_engine.so once per process (RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND,
   so that libtorch's BLAS calls bind to libtorch's own MKL and not to the
   reference BLAS that liblammps exports) and resolves the C functions of
   cpp/mlip_c_api.h (docs/CONTRACT.md) with dlsym into the table below. So
   the style compiles with LAMMPS' headers alone, and one engine build serves
   the plugin, a LAMMPS with the style compiled in and the Python package.

   Also here: the plain data that crosses that ABI (one opened model, the
   graph input of a call, the output of a force call), so that the graph
   builder, the committee and the gamma monitor speak the same types.
------------------------------------------------------------------------- */

#ifndef LMP_MLIP_ENGINE_API_H
#define LMP_MLIP_ENGINE_API_H

#include <cstdint>
#include <string>
#include <vector>

namespace LAMMPS_NS {

// size of the error-message buffers handed to the engine
constexpr int MLIP_ERRLEN = 2048;

// the graph of one engine call (docs/CONTRACT.md): nodes [0, n_local) are the
// atoms whose energies count, edges i -> j with edge_vec = x_j - x_i
// the caller's ghost-row exchange between the layers of a message-passing model (C API version 3,
// mlip_exchange_fn of cpp/mlip_c_api.h): reverse = 0 forward, 1 reverse; rows [n_nodes][width]
typedef int (*MLIPExchangeFn)(void *ctx, int reverse, int64_t width, double *rows);

struct MLIPGraphInput {
  int64_t n_nodes = 0, n_local = 0;
  const int64_t *species = nullptr;
  int64_t n_edges = 0;
  const int64_t *edge_i = nullptr, *edge_j = nullptr;
  const double *edge_vec = nullptr;
  // one-cutoff graph of message-passing models: ghost features exchanged between layers
  MLIPExchangeFn exchange = nullptr;
  void *exchange_ctx = nullptr;
};

// output of one force call, in the model's units; per-node arrays
struct MLIPResult {
  double energy = 0.0;                 // sum over the n_local nodes
  double virial[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};    // W[a][b] = sum r_a F_b (row-major)
  std::vector<double> atom_energy;     // [n_nodes]
  std::vector<double> forces;          // [n_nodes][3]
  std::vector<double> atom_virial;     // [n_nodes][9], empty unless requested
};

// one exported model opened through the engine
struct MLIPModel {
  std::string path;          // file as resolved by pair_coeff (LAMMPS_POTENTIALS)
  void *engine = nullptr;    // mlip_engine*
  double cutoff = 0.0, interaction_range = 0.0;
  std::string family;
  bool graded = false;       // the export carries an active set (extrapolation grade)
  bool message_passing = false;    // interaction_range > cutoff
  bool layered = false;      // has the layer split: runs on a one-cutoff graph with an exchange
  int64_t exchange_width = 0;    // widest feature row it exchanges (layered models)
};

// function table of libmlip_engine.so (one per process, never unloaded)
struct MLIPEngineAPI {
  void *handle = nullptr;
  std::string path;    // the file that was loaded
  void *(*open)(const char *, int, char *, int) = nullptr;
  void (*close)(void *) = nullptr;
  int (*num_species)(const void *) = nullptr;
  const char *(*species)(const void *, int) = nullptr;
  double (*cutoff)(const void *) = nullptr;
  double (*interaction_range)(const void *) = nullptr;
  const char *(*family)(const void *) = nullptr;
  const char *(*units)(const void *) = nullptr;
  int (*compute)(void *, int64_t, int64_t, const int64_t *, int64_t, const int64_t *,
                 const int64_t *, const double *, double *, double *, double *, double *, double *,
                 char *, int) = nullptr;
  // C API version 2 (extrapolation grade); nullptr with an older engine
  int (*has_grade)(const void *) = nullptr;
  int (*grade)(void *, int64_t, int64_t, const int64_t *, int64_t, const int64_t *,
               const int64_t *, const double *, double *, char *, int) = nullptr;
  // C API version 3 (message passing with a feature exchange); nullptr with an older engine
  int (*supports_exchange)(const void *) = nullptr;
  int64_t (*exchange_width)(const void *) = nullptr;
  int (*compute_exchange)(void *, int64_t, int64_t, const int64_t *, int64_t, const int64_t *,
                          const int64_t *, const double *, MLIPExchangeFn, void *, double *,
                          double *, double *, double *, double *, char *, int) = nullptr;
  int (*grade_exchange)(void *, int64_t, int64_t, const int64_t *, int64_t, const int64_t *,
                        const int64_t *, const double *, MLIPExchangeFn, void *, double *, char *,
                        int) = nullptr;
  // C API version 4 (the engine's rule for thread counts); nullptr with an older engine
  int (*parse_num_threads)(const char *, const char *, char *, int) = nullptr;

  // Energies and forces (and per-node virials if atom_virial) of `engine` on graph g, sized
  // into `out`. With g.exchange the call is collective (every rank makes it, also with no atoms). Returns the engine's status (0 = success) with its message in msg[MLIP_ERRLEN].
  int evaluate(void *engine, const MLIPGraphInput &g, MLIPResult &out, bool atom_virial,
               char *msg) const;
  // Extrapolation grade of the g.n_local local nodes into gamma[n_local]; same status convention.
  int evaluate_grade(void *engine, const MLIPGraphInput &g, double *gamma, char *msg) const;
};

// Loads libmlip_engine.so once per process (thread-safe). Returns nullptr and a message naming
// every place that was tried when no compatible engine is found.
const MLIPEngineAPI *mlip_load_engine_api(std::string &err);

}    // namespace LAMMPS_NS

#endif
