/* ----------------------------------------------------------------------
   pair_style mlip: finding and loading libmlip_engine.so (see
   mlip_engine_api.h for why the engine is dlopen()ed and not linked).

   Search order, first hit wins:
     1. $MLIP_ENGINE_LIBRARY (an explicit choice is never replaced);
     2. the directory of the code that contains this file (the plugin in
        site-packages/mlip/lib next to the engine, or a build tree), and a
        few build-tree neighbours of it;
     3. MLIP_ENGINE_DEFAULT_PATH, compiled in by CMake or by
        install_into_lammps.sh from the mlip package found at build time;
     4. the dynamic loader's search path (LD_LIBRARY_PATH).
   The loaded library must export every required symbol of the C ABI; the
   grade functions (C API version 2) are optional.
------------------------------------------------------------------------- */

#include "mlip_engine_api.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

using namespace LAMMPS_NS;

namespace {

const char *ENGINE_NAME = "libmlip_engine.so";

std::string dirname_of(const std::string &path)
{
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  return path.substr(0, pos);
}

bool file_exists(const std::string &path)
{
  return !path.empty() && access(path.c_str(), R_OK) == 0;
}

// directory of the shared object that contains this code (the plugin, or
// liblammps / lmp itself when the style is compiled into LAMMPS)
std::string own_directory()
{
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&own_directory), &info) && info.dli_fname) {
    char *real = realpath(info.dli_fname, nullptr);
    std::string out = dirname_of(real ? real : info.dli_fname);
    free(real);
    return out;
  }
  return "";
}

std::vector<std::string> engine_candidates()
{
  std::vector<std::string> out;
  const char *env = getenv("MLIP_ENGINE_LIBRARY");
  if (env && *env) {
    out.emplace_back(env);
    return out;    // an explicit choice is never silently replaced
  }
  std::string here = own_directory();
  if (!here.empty()) {
    // plugin installed in <site-packages>/mlip/lib next to the engine, or in a build tree
    for (const char *sub : {"", "/lib", "/../lib", "/../mlip/lib", "/../cpp", "/../../cpp"})
      out.push_back(here + sub + "/" + ENGINE_NAME);
  }
#ifdef MLIP_ENGINE_DEFAULT_PATH
  out.emplace_back(MLIP_ENGINE_DEFAULT_PATH);
#endif
  return out;
}

template <typename F> void bind(void *handle, F &fn, const char *symbol, std::string &missing)
{
  fn = reinterpret_cast<F>(dlsym(handle, symbol));
  if (!fn) missing += std::string(missing.empty() ? "" : ", ") + symbol;
}

// dlopen()s the first loadable candidate; records every failure in `tried`
void *open_engine_library(std::string &found, std::string &tried)
{
  // MLIP_ENGINE_DEEPBIND=0 is a diagnostic switch only (benchmarks/bench_lammps.py uses it to
  // show what the BLAS clash costs); RTLD_DEEPBIND is the default.
  int flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
  const char *deep = getenv("MLIP_ENGINE_DEEPBIND");
  if (deep && strcmp(deep, "0") == 0) flags = RTLD_NOW | RTLD_LOCAL;

  for (const auto &cand : engine_candidates()) {
    if (!file_exists(cand)) {
      tried += "\n    " + cand + " (not found)";
      continue;
    }
    dlerror();
    // RTLD_DEEPBIND: libtorch (a dependency of the engine) resolves its BLAS
    // symbols inside its own scope first, not in liblammps' reference BLAS.
    void *handle = dlopen(cand.c_str(), flags);
    if (handle) {
      found = cand;
      return handle;
    }
    const char *e = dlerror();
    tried += "\n    " + cand + " (" + (e ? e : "dlopen failed") + ")";
  }
  // last resort: the dynamic loader's search path (LD_LIBRARY_PATH)
  dlerror();
  void *handle = dlopen(ENGINE_NAME, flags);
  if (handle) {
    found = ENGINE_NAME;
    return handle;
  }
  const char *e = dlerror();
  tried += std::string("\n    ") + ENGINE_NAME + " via LD_LIBRARY_PATH (" +
      (e ? e : "dlopen failed") + ")";
  return nullptr;
}

std::mutex api_mutex;
MLIPEngineAPI api_table;

}    // namespace

/* ---------------------------------------------------------------------- */

const MLIPEngineAPI *LAMMPS_NS::mlip_load_engine_api(std::string &err)
{
  std::lock_guard<std::mutex> lock(api_mutex);
  if (api_table.handle) return &api_table;

  std::string found, tried;
  void *handle = open_engine_library(found, tried);
  if (!handle) {
    err = "cannot load mlip's C++ engine libmlip_engine.so. Tried:" + tried +
        "\n  Install the mlip Python package (which ships it), or set MLIP_ENGINE_LIBRARY to its "
        "path:  export MLIP_ENGINE_LIBRARY=$(python -m mlip.lammps_support --engine)";
    return nullptr;
  }

  MLIPEngineAPI t;
  std::string missing;
  bind(handle, t.open, "mlip_engine_open", missing);
  bind(handle, t.close, "mlip_engine_close", missing);
  bind(handle, t.num_species, "mlip_engine_num_species", missing);
  bind(handle, t.species, "mlip_engine_species", missing);
  bind(handle, t.cutoff, "mlip_engine_cutoff", missing);
  bind(handle, t.interaction_range, "mlip_engine_interaction_range", missing);
  bind(handle, t.family, "mlip_engine_family", missing);
  bind(handle, t.units, "mlip_engine_units", missing);
  bind(handle, t.compute, "mlip_engine_compute", missing);
  if (!missing.empty()) {
    err = "'" + found + "' is not a compatible mlip engine (missing symbols: " + missing +
        "); the mlip package and the LAMMPS plugin come from different versions";
    dlclose(handle);
    return nullptr;
  }
  // optional (C API version 2): without them no model reports an extrapolation grade
  t.has_grade = reinterpret_cast<decltype(t.has_grade)>(dlsym(handle, "mlip_engine_has_grade"));
  t.grade = reinterpret_cast<decltype(t.grade)>(dlsym(handle, "mlip_engine_grade"));
  if (!t.has_grade || !t.grade) t.has_grade = nullptr, t.grade = nullptr;
  // optional (C API version 3): without them message-passing models use the deep ghost shell
  t.supports_exchange =
      reinterpret_cast<decltype(t.supports_exchange)>(dlsym(handle, "mlip_engine_supports_exchange"));
  t.exchange_width =
      reinterpret_cast<decltype(t.exchange_width)>(dlsym(handle, "mlip_engine_exchange_width"));
  t.compute_exchange =
      reinterpret_cast<decltype(t.compute_exchange)>(dlsym(handle, "mlip_engine_compute_exchange"));
  t.grade_exchange =
      reinterpret_cast<decltype(t.grade_exchange)>(dlsym(handle, "mlip_engine_grade_exchange"));
  if (!t.supports_exchange || !t.exchange_width || !t.compute_exchange || !t.grade_exchange)
    t.supports_exchange = nullptr, t.exchange_width = nullptr, t.compute_exchange = nullptr,
    t.grade_exchange = nullptr;
  // optional (C API version 4): without it the style checks thread counts itself (>= 1)
  t.parse_num_threads =
      reinterpret_cast<decltype(t.parse_num_threads)>(dlsym(handle, "mlip_parse_num_threads"));
  t.handle = handle;
  t.path = found;
  api_table = t;
  return &api_table;
}

/* ---------------------------------------------------------------------- */

int MLIPEngineAPI::evaluate(void *engine, const MLIPGraphInput &g, MLIPResult &out,
                            bool atom_virial, char *msg) const
{
  out.energy = 0.0;
  for (double &v : out.virial) v = 0.0;
  out.atom_energy.resize(g.n_nodes);
  out.forces.resize(3 * g.n_nodes);
  out.atom_virial.resize(atom_virial ? 9 * g.n_nodes : 0);
  // with an exchange the call is collective: made even on a rank without atoms
  if (g.exchange)
    return compute_exchange(engine, g.n_nodes, g.n_local, g.species, g.n_edges, g.edge_i, g.edge_j,
                            g.edge_vec, g.exchange, g.exchange_ctx, &out.energy,
                            out.atom_energy.data(), out.forces.data(), out.virial,
                            atom_virial ? out.atom_virial.data() : nullptr, msg, MLIP_ERRLEN);
  // an empty graph (e.g. an MPI rank whose sub-domain holds no atom) contributes nothing
  if (g.n_nodes == 0) return 0;
  return compute(engine, g.n_nodes, g.n_local, g.species, g.n_edges, g.edge_i, g.edge_j,
                 g.edge_vec, &out.energy, out.atom_energy.data(), out.forces.data(), out.virial,
                 atom_virial ? out.atom_virial.data() : nullptr, msg, MLIP_ERRLEN);
}

int MLIPEngineAPI::evaluate_grade(void *engine, const MLIPGraphInput &g, double *gamma,
                                  char *msg) const
{
  if (g.exchange)
    return grade_exchange(engine, g.n_nodes, g.n_local, g.species, g.n_edges, g.edge_i, g.edge_j,
                          g.edge_vec, g.exchange, g.exchange_ctx, gamma, msg, MLIP_ERRLEN);
  if (g.n_local == 0) return 0;
  return grade(engine, g.n_nodes, g.n_local, g.species, g.n_edges, g.edge_i, g.edge_j,
               g.edge_vec, gamma, msg, MLIP_ERRLEN);
}
