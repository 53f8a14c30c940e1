// mlip::Engine implementation (the only translation unit that includes torch).
#include "engine.h"
#include "dp_kernel.h"
#include "mtp_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/csrc/jit/serialization/import.h>

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

namespace mlip {

namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::string shorten(std::string s, size_t max_len = 400) {
  if (s.size() > max_len) s = s.substr(0, max_len - 3) + "...";
  return s;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// A short, readable message from a (possibly huge) torch error text.
// TorchScript interpreter errors put the real reason ("RuntimeError: ...") on
// the last line after a TorchScript traceback; other errors on the first line.
std::string torch_message(const std::string& what) {
  auto lines = split_lines(what);
  if (lines.empty()) return "unknown torch error";
  if (what.find("TorchScript interpreter") != std::string::npos ||
      what.find("Traceback of TorchScript") != std::string::npos) {
    for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
      if (it->find("Error") != std::string::npos || it->find("error") != std::string::npos)
        return shorten(*it);
    }
    return shorten(lines.back());
  }
  std::string first = lines.front();
  // drop torch's generic advice after the actual reason
  for (const char* tail : {" This is an internal miniz error", " If you are seeing this error"}) {
    auto pos = first.find(tail);
    if (pos != std::string::npos) first = first.substr(0, pos);
  }
  return shorten(first);
}

std::string torch_message(const c10::Error& e) { return torch_message(e.what_without_backtrace()); }

std::string quoted(const std::string& path) { return "'" + path + "'"; }

void configure_jit_once() {
  static std::once_flag flag;
  std::call_once(flag, [] {
    // The profiling executor re-specialises graphs during the first calls,
    // which makes the first few MD steps very slow; the simple executor is
    // as fast for these models after the first call.
    torch::jit::getProfilingMode() = false;
  });
}

bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  std::string s(v);
  return !(s == "0" || s == "false" || s == "False" || s == "no" || s == "off");
}

std::vector<double> tensor_doubles(const torch::jit::Module& mod, const std::string& name) {
  auto t = mod.attr(name).toTensor().detach().to(at::kDouble).contiguous();
  const double* p = t.data_ptr<double>();
  return std::vector<double>(p, p + t.numel());
}

std::vector<int> tensor_ints(const torch::jit::Module& mod, const std::string& name) {
  auto t = mod.attr(name).toTensor().detach().to(at::kLong).contiguous();
  const int64_t* p = t.data_ptr<int64_t>();
  return std::vector<int>(p, p + t.numel());
}

// The scripted mlip.models.mtp.MTP (export attribute `model`) -> parameters of the native kernel.
MTPParams mtp_params(const torch::jit::Module& export_module) {
  auto mod = export_module.attr("model").toModule();
  MTPParams p;
  p.n_species = static_cast<int>(mod.attr("n_species").toInt());
  p.n_mu = static_cast<int>(mod.attr("n_mu").toInt());
  p.n_rb = static_cast<int>(mod.attr("radial_basis_size").toInt());
  p.max_nu = static_cast<int>(mod.attr("max_nu").toInt());
  p.n_moments = static_cast<int>(mod.attr("n_moments").toInt());
  p.cutoff = mod.attr("cutoff").toDouble();
  p.min_dist = mod.attr("rb_min").toTensor().to(at::kDouble).item<double>();
  p.scaling = mod.attr("rb_scaling").toTensor().to(at::kDouble).item<double>();
  p.radial = tensor_doubles(mod, "radial_coeffs");
  p.species_coeffs = tensor_doubles(mod, "species_coeffs");
  p.moment_coeffs = tensor_doubles(mod, "moment_coeffs");
  p.basic_mu = tensor_ints(mod, "basic_mu");
  p.basic_mono = tensor_ints(mod, "basic_mono");
  p.times_a = tensor_ints(mod, "times_a");
  p.times_b = tensor_ints(mod, "times_b");
  p.times_c = tensor_ints(mod, "times_c");
  p.times_m = tensor_doubles(mod, "times_m");
  p.mapping = tensor_ints(mod, "mapping");
  return p;
}

}  // namespace

int default_num_threads() {
  const char* v = std::getenv("MLIP_NUM_THREADS");
  if (v && *v) {
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    if (end && *end == '\0' && n > 0 && n < 100000) return static_cast<int>(n);
  }
  return 1;
}

struct Engine::Impl {
  std::string path;
  torch::jit::Module module;
  std::vector<std::string> species;
  double cutoff = 0.0;
  double interaction_range = 0.0;
  std::string family, units, dtype_name, mlip_version, metadata;
  int64_t format_version = -1;
  at::ScalarType dtype = at::kDouble;
  int num_threads = 1;
  bool optimize = false;
  bool has_grade = false;
  std::unique_ptr<MTPKernel> mtp;  // native MTP path (family "mtp"), else nullptr
  std::unique_ptr<DPKernel> dp;    // native Deep Potential path (family "deepmd"), else nullptr
  std::string backend = "torchscript";
  std::mutex mutex;

  [[noreturn]] void not_export(const std::string& what) const {
    throw ModelError(quoted(path) + " is not an mlip export (" + what + ")");
  }

  c10::IValue get_attr(const std::string& name) const {
    if (!module.hasattr(name)) not_export("missing attribute '" + name + "'");
    return module.attr(name);
  }

  double get_double(const std::string& name) const {
    auto v = get_attr(name);
    if (v.isDouble()) return v.toDouble();
    if (v.isInt()) return static_cast<double>(v.toInt());
    not_export("attribute '" + name + "' is " + v.tagKind() + ", expected float");
  }

  std::string get_string(const std::string& name) const {
    auto v = get_attr(name);
    if (!v.isString()) not_export("attribute '" + name + "' is " + v.tagKind() + ", expected str");
    return v.toStringRef();
  }
};

Engine::Engine(const std::string& path, int num_threads) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.num_threads = num_threads > 0 ? num_threads : default_num_threads();
  m.optimize = env_flag("MLIP_JIT_OPTIMIZE", false);

  // Check the file ourselves first: torch's messages for this are cryptic.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    throw ModelError("cannot open model file " + quoted(path) + ": " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    throw ModelError("cannot open model file " + quoted(path) + ": is a directory");
  }
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ModelError("cannot open model file " + quoted(path) + ": " + std::strerror(errno));
  }

  configure_jit_once();
  torch::jit::ExtraFilesMap extra{{"mlip_metadata.json", ""}};
  try {
    m.module = torch::jit::load(path, c10::Device(c10::kCPU), extra);
  } catch (const c10::Error& e) {
    std::string msg = torch_message(e);
    if (msg.find("constants.pkl") != std::string::npos) {
      msg = "a zip archive without TorchScript code: a torch.save() checkpoint? export it with "
            "'mlip export'";
    }
    throw ModelError(quoted(path) + " is not a valid TorchScript file (" + msg + ")");
  } catch (const std::exception& e) {
    throw ModelError(quoted(path) + " is not a valid TorchScript file (" +
                     torch_message(std::string(e.what())) + ")");
  }

  try {
    m.module.eval();
    // species: List[str]
    auto sp = m.get_attr("species");
    if (!sp.isList()) m.not_export("attribute 'species' is " + sp.tagKind() + ", expected List[str]");
    for (const auto& s : sp.toListRef()) {
      if (!s.isString()) m.not_export("attribute 'species' contains a non-string");
      m.species.push_back(s.toStringRef());
    }
    if (m.species.empty()) m.not_export("attribute 'species' is empty");
    m.cutoff = m.get_double("cutoff");
    m.interaction_range = m.get_double("interaction_range");
    m.family = m.get_string("family");
    m.units = m.get_string("units");
    m.dtype_name = m.get_string("dtype");
    if (m.dtype_name == "float64") {
      m.dtype = at::kDouble;
    } else if (m.dtype_name == "float32") {
      m.dtype = at::kFloat;
    } else {
      m.not_export("attribute 'dtype' is '" + m.dtype_name + "', expected 'float64' or 'float32'");
    }
    if (!(m.cutoff > 0.0) || !std::isfinite(m.cutoff)) m.not_export("cutoff must be positive");
    if (m.module.hasattr("format_version")) {
      auto v = m.module.attr("format_version");
      if (v.isInt()) m.format_version = v.toInt();
    }
    if (m.module.hasattr("mlip_version")) {
      auto v = m.module.attr("mlip_version");
      if (v.isString()) m.mlip_version = v.toStringRef();
    }
    if (!m.module.find_method("forward")) m.not_export("no forward() method");
    // extrapolation grade (exports written before it existed have neither)
    if (m.module.find_method("grade") && m.module.hasattr("has_grade")) {
      auto v = m.module.attr("has_grade");
      m.has_grade = v.isBool() && v.toBool();
    }
  } catch (const c10::Error& e) {
    throw ModelError(quoted(path) + ": cannot read the model attributes (" + torch_message(e) + ")");
  }
  // MTP and DP: native kernels unless MLIP_BACKEND=torch (the TorchScript graph stays the reference)
  if (m.family == "mtp" || m.family == "deepmd") {
    const char* be = std::getenv("MLIP_BACKEND");
    const std::string want = be && *be ? be : "native";
    if (want != "native" && want != "torch") {
      throw ModelError("MLIP_BACKEND must be 'native' or 'torch', got '" + want + "'");
    }
    // native only for our own model classes (a hand-written export may claim a family name)
    bool ours = m.module.hasattr("model") && m.module.attr("model").isModule();
    if (ours) {
      auto sub = m.module.attr("model").toModule();
      for (const char* a : m.family == "mtp" ? std::vector<const char*>{"radial_coeffs", "times_a", "basic_mono"}
                                              : std::vector<const char*>{"embedding", "fitting", "s_avg", "r_std"})
        ours = ours && sub.hasattr(a);
    }
    if (want == "native" && ours) {
      try {
        if (m.family == "mtp") {
          m.mtp = std::make_unique<MTPKernel>(mtp_params(m.module));
          m.backend = "native-mtp";
        } else {
          m.dp = std::make_unique<DPKernel>(m.module.attr("model").toModule());
          m.backend = "native-deepmd";
        }
      } catch (const c10::Error& e) {
        throw ModelError(quoted(path) + ": cannot read the " + m.family + " parameters (" + torch_message(e) + ")");
      } catch (const std::invalid_argument& e) {
        throw ModelError(quoted(path) + ": " + e.what());
      } catch (const std::exception& e) {
        throw ModelError(quoted(path) + ": cannot read the " + m.family + " parameters (" +
                         torch_message(std::string(e.what())) + ")");
      }
    }
  }
  m.metadata = extra["mlip_metadata.json"];
  if (trim(m.metadata).empty()) m.metadata = "{}";
  at::set_num_threads(m.num_threads);
  if (m.mtp || m.dp) verify_native();
}

void Engine::verify_native() {
  Impl& m = *impl_;
  const int64_t n = std::max<int64_t>(3, static_cast<int64_t>(m.species.size()));
  const double R = 0.35 * m.cutoff, pi = 3.14159265358979323846;
  std::vector<double> pos(3 * n);
  std::vector<int64_t> sp(n), ei, ej;
  std::vector<double> ev;
  for (int64_t k = 0; k < n; ++k) {
    const double th = 2.0 * pi * static_cast<double>(k) / static_cast<double>(n) + 0.1 * k;
    pos[3 * k] = R * std::cos(th);
    pos[3 * k + 1] = R * std::sin(th);
    pos[3 * k + 2] = 0.2 * R * std::sin(3.0 * th);
    sp[k] = k % static_cast<int64_t>(m.species.size());
  }
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      if (a == b) continue;
      double d[3], r2 = 0.0;
      for (int c = 0; c < 3; ++c) {
        d[c] = pos[3 * b + c] - pos[3 * a + c];
        r2 += d[c] * d[c];
      }
      if (r2 >= m.cutoff * m.cutoff) continue;
      ei.push_back(a);
      ej.push_back(b);
      ev.insert(ev.end(), d, d + 3);
    }
  const int64_t ne = static_cast<int64_t>(ei.size());
  double e_nat = 0.0, e_ts = 0.0;
  std::vector<double> f_nat(3 * n), f_ts(3 * n), w_nat(9), w_ts(9);
  compute(n, n, sp.data(), ne, ei.data(), ej.data(), ev.data(), &e_nat, nullptr, f_nat.data(), w_nat.data(), nullptr);
  auto mtp = std::move(m.mtp);
  auto dp = std::move(m.dp);
  compute(n, n, sp.data(), ne, ei.data(), ej.data(), ev.data(), &e_ts, nullptr, f_ts.data(), w_ts.data(), nullptr);
  double fmax = 1e-12, df = 0.0;
  for (int64_t k = 0; k < 3 * n; ++k) {
    fmax = std::max(fmax, std::fabs(f_ts[k]));
    df = std::max(df, std::fabs(f_nat[k] - f_ts[k]));
  }
  const double tol = m.dtype == at::kDouble ? 1e-9 : 1e-3;
  const bool ok = std::fabs(e_nat - e_ts) <= tol * std::max(1.0, std::fabs(e_ts)) && df <= tol * std::max(1.0, fmax);
  if (ok) {
    m.mtp = std::move(mtp);
    m.dp = std::move(dp);
  } else {
    m.backend = "torchscript";  // e.g. an export whose scripted code predates the native kernel's formulas
  }
}

Engine::~Engine() = default;

const std::string& Engine::path() const { return impl_->path; }
const std::vector<std::string>& Engine::species() const { return impl_->species; }
double Engine::cutoff() const { return impl_->cutoff; }
double Engine::interaction_range() const { return impl_->interaction_range; }
const std::string& Engine::family() const { return impl_->family; }
const std::string& Engine::units() const { return impl_->units; }
const std::string& Engine::dtype() const { return impl_->dtype_name; }
int64_t Engine::format_version() const { return impl_->format_version; }
const std::string& Engine::mlip_version() const { return impl_->mlip_version; }
const std::string& Engine::metadata_json() const { return impl_->metadata; }
int Engine::num_threads() const { return impl_->num_threads; }
const std::string& Engine::backend() const { return impl_->backend; }
bool Engine::has_grade() const { return impl_->has_grade; }

namespace {

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

void copy_out(const at::Tensor& t, double* out) {
  auto d = t.detach().to(c10::kCPU, at::kDouble).contiguous();
  std::memcpy(out, d.data_ptr<double>(), sizeof(double) * static_cast<size_t>(d.numel()));
}

}  // namespace

namespace {

// Checks every input before torch sees it (throws InputError).
void validate_graph(int64_t n_species, int64_t n_atoms, int64_t n_local, const int64_t* species,
                    int64_t n_edges, const int64_t* edge_i, const int64_t* edge_j,
                    const double* edge_vec) {
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
    for (int c = 0; c < 3; ++c) {
      if (!std::isfinite(edge_vec[3 * e + c])) {
        throw InputError("edge " + std::to_string(e) + " (atoms " + std::to_string(edge_i[e]) +
                         ", " + std::to_string(edge_j[e]) + ") has a non-finite edge vector");
      }
    }
  }
}

// (species [N] long, edge_index [2, E] long, edge_vec [E, 3] in the model dtype)
void graph_tensors(int64_t n_atoms, const int64_t* species, int64_t n_edges, const int64_t* edge_i,
                   const int64_t* edge_j, const double* edge_vec, at::ScalarType dtype,
                   at::Tensor& t_species, at::Tensor& t_edges, at::Tensor& t_vec) {
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  t_species = at::empty({n_atoms}, i64);
  if (n_atoms > 0) std::memcpy(t_species.data_ptr<int64_t>(), species, sizeof(int64_t) * n_atoms);
  t_edges = at::empty({2, n_edges}, i64);
  t_vec = at::empty({n_edges, 3}, at::TensorOptions().dtype(at::kDouble));
  if (n_edges > 0) {
    std::memcpy(t_edges.data_ptr<int64_t>(), edge_i, sizeof(int64_t) * n_edges);
    std::memcpy(t_edges.data_ptr<int64_t>() + n_edges, edge_j, sizeof(int64_t) * n_edges);
    std::memcpy(t_vec.data_ptr<double>(), edge_vec, sizeof(double) * 3 * n_edges);
  }
  if (dtype != at::kDouble) t_vec = t_vec.to(dtype);
}

}  // namespace

void Engine::compute(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
                     const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec,
                     double* energy, double* atom_energy, double* forces, double* virial,
                     double* atom_virial) {
  Impl& m = *impl_;
  if (!energy) throw InputError("energy output pointer is NULL");
  validate_graph(static_cast<int64_t>(m.species.size()), n_atoms, n_local, species, n_edges, edge_i,
                 edge_j, edge_vec);

  if (n_atoms == 0) {
    *energy = 0.0;
    if (virial) std::fill(virial, virial + 9, 0.0);
    return;
  }

  std::lock_guard<std::mutex> lock(m.mutex);
  if (m.mtp) {
    m.mtp->compute(n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec, energy, atom_energy,
                   forces, virial, atom_virial);
    return;
  }
  if (m.dp) {
    try {
      if (at::get_num_threads() != m.num_threads) at::set_num_threads(m.num_threads);
      c10::InferenceMode inference(true);
      m.dp->compute(n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec, energy, atom_energy,
                    forces, virial, atom_virial);
    } catch (const c10::Error& e) {
      throw ModelError("model evaluation failed: " + torch_message(e));
    }
    return;
  }
  try {
    if (at::get_num_threads() != m.num_threads) at::set_num_threads(m.num_threads);
    c10::InferenceMode no_inference(false);
    c10::AutoGradMode grad_on(true);  // forces come from autograd inside the model
    torch::jit::GraphOptimizerEnabledGuard optimize(m.optimize);

    at::Tensor t_species, t_edges, t_vec;
    graph_tensors(n_atoms, species, n_edges, edge_i, edge_j, edge_vec, m.dtype, t_species, t_edges,
                  t_vec);

    const bool want_atom_virial = atom_virial != nullptr;
    std::vector<c10::IValue> inputs{t_species, t_edges, t_vec, c10::IValue(n_local),
                                    c10::IValue(want_atom_virial)};
    c10::IValue out = m.module.forward(inputs);

    if (!out.isTuple()) throw ModelError("model returned " + out.tagKind() + ", expected a tuple");
    const auto& elems = out.toTupleRef().elements();
    if (elems.size() != 4) {
      throw ModelError("model returned a tuple of " + std::to_string(elems.size()) +
                       " values, expected 4 (atom_energy, forces, virial, atom_virial)");
    }
    for (size_t k = 0; k < 4; ++k) {
      if (!elems[k].isTensor()) throw ModelError("model output " + std::to_string(k) + " is not a tensor");
    }
    at::Tensor t_ae = elems[0].toTensor();
    at::Tensor t_f = elems[1].toTensor();
    at::Tensor t_w = elems[2].toTensor();
    check_shape(t_ae, {n_atoms}, "atom_energy");
    check_shape(t_f, {n_atoms, 3}, "forces");
    check_shape(t_w, {3, 3}, "virial");

    auto ae = t_ae.detach().to(c10::kCPU, at::kDouble).contiguous();
    const double* pae = ae.data_ptr<double>();
    double esum = 0.0;
    for (int64_t a = 0; a < n_local; ++a) esum += pae[a];
    *energy = esum;
    if (atom_energy) std::memcpy(atom_energy, pae, sizeof(double) * n_atoms);
    if (forces) copy_out(t_f, forces);
    if (virial) copy_out(t_w, virial);
    if (want_atom_virial) {
      at::Tensor t_av = elems[3].toTensor();
      check_shape(t_av, {n_atoms, 9}, "atom_virial");
      copy_out(t_av, atom_virial);
    }
  } catch (const c10::Error& e) {
    throw ModelError("model evaluation failed: " + torch_message(e));
  } catch (const ModelError&) {
    throw;
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw ModelError(std::string("model evaluation failed: ") + torch_message(std::string(e.what())));
  }
}

void Engine::grade(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
                   const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec,
                   double* gamma) {
  Impl& m = *impl_;
  if (!m.has_grade) {
    throw ModelError("'" + m.path + "' has no active set: no extrapolation grade (build one with "
                     "mlip.active.nn_grade / mlip select and export again)");
  }
  if (n_local > 0 && !gamma) throw InputError("gamma output pointer is NULL");
  validate_graph(static_cast<int64_t>(m.species.size()), n_atoms, n_local, species, n_edges, edge_i,
                 edge_j, edge_vec);
  if (n_local == 0) return;

  std::lock_guard<std::mutex> lock(m.mutex);
  try {
    if (at::get_num_threads() != m.num_threads) at::set_num_threads(m.num_threads);
    c10::InferenceMode no_inference(false);
    c10::NoGradGuard no_grad;
    torch::jit::GraphOptimizerEnabledGuard optimize(m.optimize);
    at::Tensor t_species, t_edges, t_vec;
    graph_tensors(n_atoms, species, n_edges, edge_i, edge_j, edge_vec, m.dtype, t_species, t_edges,
                  t_vec);
    std::vector<c10::IValue> inputs{t_species, t_edges, t_vec, c10::IValue(n_local)};
    c10::IValue out = m.module.get_method("grade")(inputs);
    if (!out.isTensor()) throw ModelError("grade returned " + out.tagKind() + ", expected a tensor");
    at::Tensor g = out.toTensor();
    check_shape(g, {n_local}, "gamma");
    copy_out(g, gamma);
  } catch (const c10::Error& e) {
    throw ModelError("extrapolation grade failed: " + torch_message(e));
  } catch (const ModelError&) {
    throw;
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw ModelError(std::string("extrapolation grade failed: ") + torch_message(std::string(e.what())));
  }
}

}  // namespace mlip
