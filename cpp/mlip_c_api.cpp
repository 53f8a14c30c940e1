// C ABI over mlip::Engine. No exception may leave these functions.
#include "mlip_c_api.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "backend.h"  // FeatureExchange
#include "engine.h"

struct mlip_engine {
  mlip::Engine* engine;
};

namespace {

void write_err(char* err, int errlen, const std::string& msg) {
  if (!err || errlen <= 0) return;
  size_t n = std::min(msg.size(), static_cast<size_t>(errlen - 1));
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// The caller's C callback as the engine's FeatureExchange.
class CallbackExchange : public mlip::FeatureExchange {
 public:
  CallbackExchange(mlip_exchange_fn fn, void* ctx) : fn_(fn), ctx_(ctx) {}
  void forward(double* rows, int64_t width) const override { call(0, rows, width); }
  void reverse(double* rows, int64_t width) const override { call(1, rows, width); }

 private:
  void call(int reverse, double* rows, int64_t width) const {
    if (fn_(ctx_, reverse, width, rows) != 0) {
      throw mlip::ModelError(std::string("the caller's feature exchange failed (") +
                             (reverse ? "reverse" : "forward") + ")");
    }
  }
  mlip_exchange_fn fn_;
  void* ctx_;
};

}  // namespace

extern "C" {

mlip_engine* mlip_engine_open(const char* path, int num_threads, char* err, int errlen) {
  write_err(err, errlen, "");
  try {
    if (!path) {
      write_err(err, errlen, "mlip_engine_open: path is NULL");
      return nullptr;
    }
    auto* h = new mlip_engine{nullptr};
    try {
      h->engine = new mlip::Engine(path, num_threads);
    } catch (...) {
      delete h;
      throw;
    }
    return h;
  } catch (const std::bad_alloc&) {
    write_err(err, errlen, "out of memory while loading the model");
  } catch (const std::exception& e) {
    write_err(err, errlen, e.what());
  } catch (...) {
    write_err(err, errlen, "unknown error while loading the model");
  }
  return nullptr;
}

void mlip_engine_close(mlip_engine* h) {
  if (!h) return;
  try {
    delete h->engine;
  } catch (...) {
  }
  delete h;
}

int mlip_engine_num_species(const mlip_engine* h) {
  return h ? static_cast<int>(h->engine->species().size()) : 0;
}

const char* mlip_engine_species(const mlip_engine* h, int k) {
  if (!h || k < 0 || k >= static_cast<int>(h->engine->species().size())) return nullptr;
  return h->engine->species()[k].c_str();
}

double mlip_engine_cutoff(const mlip_engine* h) { return h ? h->engine->cutoff() : 0.0; }

double mlip_engine_interaction_range(const mlip_engine* h) {
  return h ? h->engine->interaction_range() : 0.0;
}

const char* mlip_engine_family(const mlip_engine* h) { return h ? h->engine->family().c_str() : ""; }

const char* mlip_engine_units(const mlip_engine* h) { return h ? h->engine->units().c_str() : ""; }

const char* mlip_engine_metadata_json(const mlip_engine* h) {
  return h ? h->engine->metadata_json().c_str() : "{}";
}

int mlip_engine_compute(mlip_engine* h, int64_t n_atoms, int64_t n_local, const int64_t* species,
                        int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                        const double* edge_vec, double* energy, double* atom_energy,
                        double* forces, double* virial, double* atom_virial, char* err,
                        int errlen) {
  return mlip_engine_compute_exchange(h, n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec,
                                      nullptr, nullptr, energy, atom_energy, forces, virial, atom_virial,
                                      err, errlen);
}

int mlip_engine_supports_exchange(const mlip_engine* h) {
  return h && h->engine->supports_exchange() ? 1 : 0;
}

int64_t mlip_engine_exchange_width(const mlip_engine* h) { return h ? h->engine->exchange_width() : 0; }

int mlip_engine_compute_exchange(mlip_engine* h, int64_t n_atoms, int64_t n_local, const int64_t* species,
                                 int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                                 const double* edge_vec, mlip_exchange_fn exchange, void* ctx,
                                 double* energy, double* atom_energy, double* forces, double* virial,
                                 double* atom_virial, char* err, int errlen) {
  write_err(err, errlen, "");
  if (!h) {
    write_err(err, errlen, "mlip_engine_compute: engine is NULL");
    return 1;
  }
  try {
    CallbackExchange cb(exchange, ctx);
    h->engine->compute(n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec, energy,
                       atom_energy, forces, virial, atom_virial, exchange ? &cb : nullptr);
    return 0;
  } catch (const mlip::InputError& e) {
    write_err(err, errlen, std::string("invalid input: ") + e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    write_err(err, errlen, "out of memory in model evaluation");
    return 3;
  } catch (const std::exception& e) {
    write_err(err, errlen, e.what());
    return 1;
  } catch (...) {
    write_err(err, errlen, "unknown error in model evaluation");
    return 1;
  }
}

int mlip_engine_has_grade(const mlip_engine* h) { return h && h->engine->has_grade() ? 1 : 0; }

int mlip_engine_grade(mlip_engine* h, int64_t n_atoms, int64_t n_local, const int64_t* species,
                      int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                      const double* edge_vec, double* gamma, char* err, int errlen) {
  return mlip_engine_grade_exchange(h, n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec, nullptr,
                                    nullptr, gamma, err, errlen);
}

int mlip_engine_grade_exchange(mlip_engine* h, int64_t n_atoms, int64_t n_local, const int64_t* species,
                               int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                               const double* edge_vec, mlip_exchange_fn exchange, void* ctx, double* gamma,
                               char* err, int errlen) {
  write_err(err, errlen, "");
  if (!h) {
    write_err(err, errlen, "mlip_engine_grade: engine is NULL");
    return 1;
  }
  try {
    CallbackExchange cb(exchange, ctx);
    h->engine->grade(n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec, gamma,
                     exchange ? &cb : nullptr);
    return 0;
  } catch (const mlip::InputError& e) {
    write_err(err, errlen, std::string("invalid input: ") + e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    write_err(err, errlen, "out of memory in the extrapolation grade");
    return 3;
  } catch (const std::exception& e) {
    write_err(err, errlen, e.what());
    return 1;
  } catch (...) {
    write_err(err, errlen, "unknown error in the extrapolation grade");
    return 1;
  }
}

int mlip_parse_num_threads(const char* text, const char* what, char* err, int errlen) {
  write_err(err, errlen, "");
  try {
    if (!text) return mlip::default_num_threads();
    return mlip::parse_num_threads(text, what ? what : "num_threads");
  } catch (const std::exception& e) {
    write_err(err, errlen, e.what());
  } catch (...) {
    write_err(err, errlen, "unknown error while checking a thread count");
  }
  return 0;
}

}  // extern "C"
