// mlip::Engine: loads an export, picks its backend and runs it (see engine.h).
//
// What lives where:
//   engine.cpp             this file: the file checks, loading the TorchScript module, reading the
//                          export's attributes (docs/CONTRACT.md), and compute()/grade() that
//                          validate the caller's graph, lock, and hand it to the backend
//   backend.h              the Backend interface (GraphInput -> Outputs) every evaluator implements
//   torchscript_backend.*  the export's own scripted forward() and grade() (reference, any family)
//   layered_backend.*      message-passing exports block by block, ghost features exchanged by the caller
//   native_backends.h      MTPBackend (mtp_backend.cpp) and DPBackend (dp_backend.cpp)
//   backend_factory.*      which backend: family, MLIP_BACKEND, and the native-vs-TorchScript check
//   graph_input.*          validation of the caller's arrays and their tensor marshalling
//   torch_errors.*         torch error text -> the one-line messages thrown here
#include "engine.h"

#include "archive_check.h"
#include "backend.h"
#include "backend_factory.h"
#include "graph_input.h"
#include "layered_backend.h"
#include "torch_errors.h"
#include "torchscript_backend.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>

namespace mlip {

namespace {

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

}  // namespace

int max_num_threads() {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<int>(std::max<long>(64, 4 * std::max<long>(cpus, 1)));
}

namespace {

std::string thread_rule() {
  return "must be an integer from 1 to " + std::to_string(max_num_threads()) + " (this machine has " +
         std::to_string(std::max<long>(sysconf(_SC_NPROCESSORS_ONLN), 1)) + " CPUs)";
}

}  // namespace

int check_num_threads(long long n, const std::string& what) {
  if (n < 1 || n > max_num_threads()) throw InputError(what + " " + thread_rule() + ", got " + std::to_string(n));
  return static_cast<int>(n);
}

int parse_num_threads(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  const long long n = std::strtoll(text.c_str(), &end, 10);
  const bool integer = !text.empty() && end && *end == '\0' && errno == 0 &&
                       text.find_first_of(" \t\n\r") == std::string::npos;
  if (!integer || n < 1 || n > max_num_threads()) throw InputError(what + " " + thread_rule() + ", got '" + text + "'");
  return static_cast<int>(n);
}

int default_num_threads() {
  const char* v = std::getenv("MLIP_NUM_THREADS");
  if (v && *v) return parse_num_threads(v, "environment variable MLIP_NUM_THREADS");
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
  c10::Device device = c10::Device(c10::kCPU);
  bool optimize = false;
  bool has_grade = false;
  // The export's TorchScript: always there (the grade and the reference of the native check).
  std::unique_ptr<TorchScriptBackend> torchscript;
  // The verified native kernel of an MTP / DP export, else nullptr.
  std::unique_ptr<Backend> native;
  // The verified layer split of a message-passing export, else nullptr.
  std::unique_ptr<LayeredBackend> layered;
  Backend* backend = nullptr;  // native or layered if set, else torchscript

  // the backend for graph g: the layered one when it can take g; a one-cutoff graph of a
  // message-passing model without the layer split is refused (it would give wrong forces)
  Backend* backend_for(const GraphInput& g) const {
    if (layered && layered->handles(g)) return layered.get();
    if (g.exchange && g.n_local < g.n_atoms && interaction_range > cutoff) {
      throw InputError(layered ? "a graph with a feature exchange needs every edge centred on a local atom, "
                                 "sorted by centre"
                               : "'" + path + "' has no layer split (a message-passing export without "
                                 "layer_forward/layer_vjp): it needs ghost atoms out to its interaction "
                                 "range, not a feature exchange");
    }
    return backend;
  }
  std::mutex mutex;

  [[noreturn]] void not_export(const std::string& what) const {
    throw ModelError(quoted_path(path) + " is not an mlip export (" + what + ")");
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

  void read_attributes();
};

// The export's attributes (docs/CONTRACT.md); throws ModelError naming the first bad one.
void Engine::Impl::read_attributes() {
  try {
    module.eval();
    // species: List[str]
    auto sp = get_attr("species");
    if (!sp.isList()) not_export("attribute 'species' is " + sp.tagKind() + ", expected List[str]");
    for (const auto& s : sp.toListRef()) {
      if (!s.isString()) not_export("attribute 'species' contains a non-string");
      species.push_back(s.toStringRef());
    }
    if (species.empty()) not_export("attribute 'species' is empty");
    cutoff = get_double("cutoff");
    interaction_range = get_double("interaction_range");
    family = get_string("family");
    units = get_string("units");
    dtype_name = get_string("dtype");
    if (dtype_name == "float64") {
      dtype = at::kDouble;
    } else if (dtype_name == "float32") {
      dtype = at::kFloat;
    } else {
      not_export("attribute 'dtype' is '" + dtype_name + "', expected 'float64' or 'float32'");
    }
    if (!(cutoff > 0.0) || !std::isfinite(cutoff)) not_export("cutoff must be positive");
    if (module.hasattr("format_version")) {
      auto v = module.attr("format_version");
      if (v.isInt()) format_version = v.toInt();
    }
    if (module.hasattr("mlip_version")) {
      auto v = module.attr("mlip_version");
      if (v.isString()) mlip_version = v.toStringRef();
    }
    if (!module.find_method("forward")) not_export("no forward() method");
    // extrapolation grade (exports written before it existed have neither)
    if (module.find_method("grade") && module.hasattr("has_grade")) {
      auto v = module.attr("has_grade");
      has_grade = v.isBool() && v.toBool();
    }
  } catch (const c10::Error& e) {
    throw ModelError(quoted_path(path) + ": cannot read the model attributes (" + torch_message(e) + ")");
  }
}

namespace {
c10::Device parse_device(const std::string& name) {
  if (name == "cpu") return c10::Device(c10::kCPU);
  const bool have_cuda = torch::cuda::is_available();
  if (name == "auto") return have_cuda ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    c10::Device d(c10::kCPU);
    try {
      d = c10::Device(name);
    } catch (const c10::Error&) {
      throw InputError("device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got '" + name + "'");
    }
    if (!have_cuda) {
      throw ModelError("device '" + name + "': this libtorch sees no CUDA device (a CPU-only build, or no "
                       "GPU): use device 'cpu' or 'auto'");
    }
    if (d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count())) {
      throw ModelError("device '" + name + "': there are " + std::to_string(torch::cuda::device_count()) +
                       " CUDA device(s)");
    }
    return d;
  }
  throw InputError("device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got '" + name + "'");
}
}  // namespace

Engine::Engine(const std::string& path, int num_threads, const std::string& device)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.device = parse_device(device);
  m.num_threads = num_threads > 0 ? check_num_threads(num_threads) : default_num_threads();
  m.optimize = env_flag("MLIP_JIT_OPTIMIZE", false);

  // Check the file ourselves first: torch's messages for this are cryptic.
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    throw ModelError("cannot open model file " + quoted_path(path) + ": " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    throw ModelError("cannot open model file " + quoted_path(path) + ": is a directory");
  }
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw ModelError("cannot open model file " + quoted_path(path) + ": " + std::strerror(errno));
  }
  // torch does not compare the archive's CRCs: a damaged export would load and give other numbers
  check_archive(path);

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
    throw ModelError(quoted_path(path) + " is not a valid TorchScript file (" + msg + ")");
  } catch (const std::exception& e) {
    throw ModelError(quoted_path(path) + " is not a valid TorchScript file (" +
                     torch_message(std::string(e.what())) + ")");
  }
  m.read_attributes();

  if (!m.device.is_cpu()) {  // TorchScript on the device; the native and layered paths are CPU code
    m.module.to(m.device);
    m.torchscript = std::make_unique<TorchScriptBackend>(m.module, m.dtype, m.num_threads, m.optimize, m.device);
    m.metadata = extra["mlip_metadata.json"];
    if (m.metadata.find_first_not_of(" \t\r\n") == std::string::npos) m.metadata = "{}";
    m.backend = m.torchscript.get();
    return;
  }
  m.torchscript = std::make_unique<TorchScriptBackend>(m.module, m.dtype, m.num_threads, m.optimize);
  // MTP and DP: native kernels unless MLIP_BACKEND=torch (the TorchScript graph stays the reference)
  std::unique_ptr<Backend> native = make_native_backend(m.module, m.family, m.path, m.num_threads);
  m.metadata = extra["mlip_metadata.json"];
  if (m.metadata.find_first_not_of(" \t\r\n") == std::string::npos) m.metadata = "{}";
  at::set_num_threads(m.num_threads);
  // else e.g. an export whose scripted code predates the native kernel's formulas: TorchScript
  if (native && native_matches_reference(*native, *m.torchscript, static_cast<int64_t>(m.species.size()),
                                         m.cutoff, m.dtype == at::kDouble)) {
    m.native = std::move(native);
  }
  // message passing with the layer split: the layered backend, unless MLIP_BACKEND=torch
  const char* be = std::getenv("MLIP_BACKEND");
  const bool want_torch = be && std::string(be) == "torch";
  if (!m.native && !want_torch && LayeredBackend::accepts(m.module)) {
    auto layered = std::make_unique<LayeredBackend>(m.module, m.dtype, m.num_threads, m.optimize);
    if (native_matches_reference(*layered, *m.torchscript, static_cast<int64_t>(m.species.size()), m.cutoff,
                                 m.dtype == at::kDouble)) {
      m.layered = std::move(layered);
    }
  }
  m.backend = m.native ? m.native.get() : m.torchscript.get();
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
std::string Engine::device() const { return impl_->device.str(); }
const std::string& Engine::backend() const {
  return impl_->layered ? impl_->layered->name() : impl_->backend->name();
}
bool Engine::supports_exchange() const { return impl_->layered != nullptr; }
int64_t Engine::exchange_width() const { return impl_->layered ? impl_->layered->max_width() : 0; }
bool Engine::has_grade() const { return impl_->has_grade; }

void Engine::compute(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
                     const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec,
                     double* energy, double* atom_energy, double* forces, double* virial,
                     double* atom_virial, const FeatureExchange* exchange) {
  Impl& m = *impl_;
  if (!energy) throw InputError("energy output pointer is NULL");
  const GraphInput g{n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec, exchange};
  validate_graph(g, static_cast<int64_t>(m.species.size()));

  if (n_atoms == 0 && !(exchange && m.layered)) {  // with an exchange, every rank takes part in it
    *energy = 0.0;
    if (virial) std::fill(virial, virial + 9, 0.0);
    return;
  }
  const Outputs out{energy, atom_energy, forces, virial, atom_virial};
  Backend* b = m.backend_for(g);
  std::lock_guard<std::mutex> lock(m.mutex);
  b->compute(g, out);
}

void Engine::grade(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
                   const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec,
                   double* gamma, const FeatureExchange* exchange) {
  Impl& m = *impl_;
  if (!m.has_grade) {
    throw ModelError("'" + m.path + "' has no active set: no extrapolation grade (build one with "
                     "mlip select, or mlip.active.grade.export_graded)");
  }
  if (n_local > 0 && !gamma) throw InputError("gamma output pointer is NULL");
  const GraphInput g{n_atoms, n_local, species, n_edges, edge_i, edge_j, edge_vec, exchange};
  validate_graph(g, static_cast<int64_t>(m.species.size()));
  if (n_local == 0 && !exchange) return;  // with an exchange, every rank takes part in it

  Backend* b = m.backend_for(g);
  std::lock_guard<std::mutex> lock(m.mutex);
  if (b == m.layered.get()) {
    m.layered->grade(g, gamma);
  } else {
    if (n_local > 0) m.torchscript->grade(g, gamma);
  }
}

}  // namespace mlip
