// pybind11 module mlip._core: neighbor_list and Engine (see docs/CONTRACT.md).
// No torch headers here: data cross as numpy arrays.
#include <dlfcn.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "archive_check.h"
#include "backend.h"  // FeatureExchange (no torch types)
#include "engine.h"
#include "mlip_c_api.h"
#include "neighbor_list.h"

namespace py = pybind11;

namespace {

using f64_array = py::array_t<double, py::array::c_style | py::array::forcecast>;
using i64_array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t k = 0; k < a.ndim(); ++k) s << (k ? ", " : "") << a.shape(k);
  if (a.ndim() == 1) s << ",";
  s << ")";
  return s.str();
}

// Move a std::vector into a numpy array without copying.
template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  if (v.empty()) return py::array_t<T>(shape);
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule owner(owned, [](void* p) { delete reinterpret_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), owner);
}

f64_array as_f64(const py::object& obj, const char* name) {
  py::array raw = py::array::ensure(obj);
  if (!raw) throw py::value_error(std::string(name) + " must be an array of numbers");
  if (raw.dtype().kind() == 'c' || raw.dtype().kind() == 'O' || raw.dtype().kind() == 'U' ||
      raw.dtype().kind() == 'S') {
    throw py::value_error(std::string(name) + " must be a real-valued array, got dtype " +
                          std::string(py::str(raw.dtype())));
  }
  return f64_array::ensure(raw);
}

i64_array as_i64(const py::object& obj, const char* name) {
  py::array raw = py::array::ensure(obj);
  if (!raw) throw py::value_error(std::string(name) + " must be an integer array");
  const char kind = raw.dtype().kind();
  if (!(kind == 'i' || kind == 'u') && raw.size() > 0) {
    throw py::value_error(std::string(name) + " must be an integer array, got dtype " +
                          std::string(py::str(raw.dtype())));
  }
  return i64_array::ensure(raw);
}

py::tuple neighbor_list_py(const py::object& positions_obj, const py::object& cell_obj,
                           const py::object& pbc_obj, double cutoff) {
  f64_array positions = as_f64(positions_obj, "positions");
  int64_t n = 0;
  if (positions.size() == 0 && positions.ndim() <= 2) {
    n = 0;
  } else if (positions.ndim() != 2 || positions.shape(1) != 3) {
    throw py::value_error("positions must have shape (N, 3), got " + shape_str(positions));
  } else {
    n = positions.shape(0);
  }

  double cell[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  if (!cell_obj.is_none()) {
    f64_array c = as_f64(cell_obj, "cell");
    if (c.ndim() != 2 || c.shape(0) != 3 || c.shape(1) != 3) {
      throw py::value_error("cell must have shape (3, 3) (rows = cell vectors), got " +
                            shape_str(c));
    }
    std::copy(c.data(), c.data() + 9, cell);
  }

  bool pbc[3];
  {
    auto p = py::array_t<bool, py::array::c_style | py::array::forcecast>::ensure(pbc_obj);
    if (!p) throw py::value_error("pbc must be a bool or a sequence of 3 bools");
    if (p.ndim() == 0) {
      pbc[0] = pbc[1] = pbc[2] = *p.data();
    } else if (p.ndim() == 1 && p.shape(0) == 3) {
      for (int d = 0; d < 3; ++d) pbc[d] = p.data()[d];
    } else {
      throw py::value_error("pbc must be a bool or a sequence of 3 bools, got shape " +
                            shape_str(p));
    }
  }

  mlip::NeighborList nl;
  {
    py::gil_scoped_release release;
    nl = mlip::neighbor_list(positions.data(), n, cell, pbc, cutoff);
  }
  const auto n_edges = static_cast<py::ssize_t>(nl.edge_j.size());
  std::vector<int64_t> edge_index(2 * n_edges);
  std::copy(nl.edge_i.begin(), nl.edge_i.end(), edge_index.begin());
  std::copy(nl.edge_j.begin(), nl.edge_j.end(), edge_index.begin() + n_edges);
  std::vector<int64_t>().swap(nl.edge_i);
  std::vector<int64_t>().swap(nl.edge_j);
  return py::make_tuple(to_numpy(std::move(edge_index), {2, n_edges}),
                        to_numpy(std::move(nl.shifts), {n_edges, 3}),
                        to_numpy(std::move(nl.edge_vec), {n_edges, 3}));
}

// A Python object with forward(rows) and reverse(rows) (rows: float64[n_atoms, width], modified in
// place) as the engine's FeatureExchange: lets tests drive the layer split without LAMMPS.
class PyExchange : public mlip::FeatureExchange {
 public:
  PyExchange(py::object obj, int64_t n_atoms) : obj_(std::move(obj)), n_atoms_(n_atoms) {}
  void forward(double* rows, int64_t width) const override { call("forward", rows, width); }
  void reverse(double* rows, int64_t width) const override { call("reverse", rows, width); }

 private:
  void call(const char* method, double* rows, int64_t width) const {
    py::gil_scoped_acquire gil;
    py::array_t<double> view({static_cast<py::ssize_t>(n_atoms_), static_cast<py::ssize_t>(width)}, rows,
                             py::none());
    obj_.attr(method)(view);
  }
  py::object obj_;
  int64_t n_atoms_;
};

py::dict engine_compute(mlip::Engine& engine, const py::object& species_obj,
                        const py::object& edge_index_obj, const py::object& edge_vec_obj,
                        const py::object& n_local_obj, bool want_atom_virial, const py::object& exchange_obj) {
  i64_array species = as_i64(species_obj, "species");
  if (species.ndim() != 1) {
    throw py::value_error("species must have shape (N,), got " + shape_str(species));
  }
  const int64_t n = species.shape(0);
  i64_array edge_index = as_i64(edge_index_obj, "edge_index");
  if (edge_index.ndim() != 2 || edge_index.shape(0) != 2) {
    throw py::value_error("edge_index must have shape (2, E), got " + shape_str(edge_index));
  }
  const int64_t n_edges = edge_index.shape(1);
  f64_array edge_vec = as_f64(edge_vec_obj, "edge_vec");
  if (!(edge_vec.ndim() == 2 && edge_vec.shape(0) == n_edges && edge_vec.shape(1) == 3) &&
      !(n_edges == 0 && edge_vec.size() == 0)) {
    throw py::value_error("edge_vec must have shape (E, 3) = (" + std::to_string(n_edges) +
                          ", 3), got " + shape_str(edge_vec));
  }
  const int64_t n_local = n_local_obj.is_none() ? n : n_local_obj.cast<int64_t>();

  py::array_t<double> atom_energy({static_cast<py::ssize_t>(n)});
  py::array_t<double> forces({static_cast<py::ssize_t>(n), py::ssize_t{3}});
  py::array_t<double> virial({py::ssize_t{3}, py::ssize_t{3}});
  py::object atom_virial_obj = py::none();
  double* atom_virial_ptr = nullptr;
  if (want_atom_virial) {
    py::array_t<double> av({static_cast<py::ssize_t>(n), py::ssize_t{9}});
    atom_virial_ptr = av.mutable_data();
    atom_virial_obj = av;
  }
  double energy = 0.0;
  {
    double* pae = atom_energy.mutable_data();
    double* pf = forces.mutable_data();
    double* pw = virial.mutable_data();
    const int64_t* ps = species.data();
    const int64_t* pei = edge_index.data();
    const double* pv = edge_vec.data();
    std::unique_ptr<PyExchange> ex;
    if (!exchange_obj.is_none()) ex = std::make_unique<PyExchange>(exchange_obj, n);
    py::gil_scoped_release release;
    engine.compute(n, n_local, ps, n_edges, pei, pei + n_edges, pv, &energy, pae, pf, pw,
                   atom_virial_ptr, ex.get());
  }
  py::dict out;
  out["energy"] = energy;
  out["atom_energy"] = atom_energy;
  out["forces"] = forces;
  out["virial"] = virial;
  out["atom_virial"] = atom_virial_obj;
  return out;
}

py::array_t<double> engine_grade(mlip::Engine& engine, const py::object& species_obj,
                                 const py::object& edge_index_obj, const py::object& edge_vec_obj,
                                 const py::object& n_local_obj, const py::object& exchange_obj) {
  i64_array species = as_i64(species_obj, "species");
  if (species.ndim() != 1) {
    throw py::value_error("species must have shape (N,), got " + shape_str(species));
  }
  const int64_t n = species.shape(0);
  i64_array edge_index = as_i64(edge_index_obj, "edge_index");
  if (edge_index.ndim() != 2 || edge_index.shape(0) != 2) {
    throw py::value_error("edge_index must have shape (2, E), got " + shape_str(edge_index));
  }
  const int64_t n_edges = edge_index.shape(1);
  f64_array edge_vec = as_f64(edge_vec_obj, "edge_vec");
  if (!(edge_vec.ndim() == 2 && edge_vec.shape(0) == n_edges && edge_vec.shape(1) == 3) &&
      !(n_edges == 0 && edge_vec.size() == 0)) {
    throw py::value_error("edge_vec must have shape (E, 3) = (" + std::to_string(n_edges) +
                          ", 3), got " + shape_str(edge_vec));
  }
  const int64_t n_local = n_local_obj.is_none() ? n : n_local_obj.cast<int64_t>();
  if (n_local < 0 || n_local > n) {
    throw py::value_error("n_local must be in [0, " + std::to_string(n) + "], got " +
                          std::to_string(n_local));
  }
  py::array_t<double> gamma({static_cast<py::ssize_t>(n_local)});
  {
    double* pg = gamma.mutable_data();
    const int64_t* ps = species.data();
    const int64_t* pei = edge_index.data();
    const double* pv = edge_vec.data();
    std::unique_ptr<PyExchange> ex;
    if (!exchange_obj.is_none()) ex = std::make_unique<PyExchange>(exchange_obj, n);
    py::gil_scoped_release release;
    engine.grade(n, n_local, ps, n_edges, pei, pei + n_edges, pv, pg, ex.get());
  }
  return gamma;
}

std::string engine_library_path() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&mlip_engine_open), &info) && info.dli_fname) {
    return info.dli_fname;
  }
  return "";
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "mlip native core: neighbour list and TorchScript engine";
  m.attr("C_API_VERSION") = MLIP_C_API_VERSION;

  m.def("neighbor_list", &neighbor_list_py, py::arg("positions"), py::arg("cell"), py::arg("pbc"),
        py::arg("cutoff"),
        R"doc(Full neighbour list with all periodic images (O(N) cell list).

positions float64[N,3], cell float64[3,3] (rows = cell vectors; may be None or zero
along non-periodic directions), pbc bool or bool[3], cutoff > 0.
Returns (edge_index int64[2,E], shifts int64[E,3], edge_vec float64[E,3]) with
edge_vec = x[j] - x[i] + shifts @ cell and 0 < |edge_vec| < cutoff, sorted by i, j, shift.
Raises ValueError for bad input.)doc");

  m.def("engine_library_path", &engine_library_path,
        "Absolute path of the loaded libmlip_engine.so (for dlopen users, e.g. LAMMPS).");
  m.def("default_num_threads", &mlip::default_num_threads,
        "Threads used when num_threads <= 0 (env MLIP_NUM_THREADS, else 1; ValueError naming the "
        "variable if it is not an integer from 1 to max_num_threads()).");
  m.def("max_num_threads", &mlip::max_num_threads,
        "Largest thread count the engine accepts: max(4 x the CPUs of this machine, 64).");
  m.def("check_num_threads", &mlip::check_num_threads, py::arg("n"), py::arg("what") = "num_threads",
        "n if it is an integer from 1 to max_num_threads(), else ValueError \"<what> must be ..., got n\".");
  m.def(
      "check_archive",
      [](const py::object& path) {
        std::string p = py::str(py::module_::import("os").attr("fspath")(path));
        py::gil_scoped_release release;
        mlip::check_archive(p);
      },
      py::arg("path"),
      "Compare every entry of an export's zip archive with its recorded CRC-32 (the check the engine "
      "makes before loading). RuntimeError \"model file 'X' is damaged: entry 'Y' fails its CRC check "
      "...\"; a file that is not a zip archive passes.");

  py::class_<mlip::Engine>(m, "Engine", "Runs an mlip TorchScript export (C++ / libtorch).")
      .def(py::init([](const py::object& path, int num_threads, const std::string& device) {
             std::string p = py::str(py::module_::import("os").attr("fspath")(path));
             py::gil_scoped_release release;
             return std::make_unique<mlip::Engine>(p, num_threads, device);
           }),
           py::arg("path"), py::arg("num_threads") = 1, py::arg("device") = "cpu")
      .def_property_readonly("device", &mlip::Engine::device)
      .def_property_readonly("path", &mlip::Engine::path)
      .def_property_readonly("species", &mlip::Engine::species)
      .def_property_readonly("cutoff", &mlip::Engine::cutoff)
      .def_property_readonly("interaction_range", &mlip::Engine::interaction_range)
      .def_property_readonly("family", &mlip::Engine::family)
      .def_property_readonly("units", &mlip::Engine::units)
      .def_property_readonly("dtype", &mlip::Engine::dtype)
      .def_property_readonly("format_version", &mlip::Engine::format_version)
      .def_property_readonly("mlip_version", &mlip::Engine::mlip_version)
      .def_property_readonly("metadata", &mlip::Engine::metadata_json)
      .def_property_readonly("num_threads", &mlip::Engine::num_threads)
      .def_property_readonly("backend", &mlip::Engine::backend)
      .def("compute", &engine_compute, py::arg("species"), py::arg("edge_index"),
           py::arg("edge_vec"), py::arg("n_local") = py::none(), py::arg("atom_virial") = false,
           py::arg("exchange") = py::none(),
           R"doc(Evaluate the model.

species int64[N] (model indices), edge_index int64[2,E], edge_vec float64[E,3],
n_local (default N): energy sums atom_energy[:n_local]; atom_virial: also return
per-atom virials. Returns dict(energy, atom_energy[N], forces[N,3], virial[3,3],
atom_virial[N,9] or None). exchange: an object with forward(rows) / reverse(rows)
(float64[N, width], in place) for a one-cutoff graph of a message-passing model with ghosts
(docs/CONTRACT.md, "Layer split"). Raises ValueError (bad input) / RuntimeError (model).)doc")
      .def_property_readonly("supports_exchange", &mlip::Engine::supports_exchange,
                             "True if the export has the layer split (feature exchange between layers).")
      .def_property_readonly("has_grade", &mlip::Engine::has_grade,
                             "True if the export carries a MaxVol active set (extrapolation grade).")
      .def("grade", &engine_grade, py::arg("species"), py::arg("edge_index"), py::arg("edge_vec"),
           py::arg("n_local") = py::none(), py::arg("exchange") = py::none(),
           R"doc(Per-atom extrapolation grade gamma[n_local] (float64) of the first n_local atoms
(default N), same inputs as compute. Raises RuntimeError if the export has no active set.)doc")
      .def("__repr__", [](const mlip::Engine& e) {
        std::string s = "<mlip._core.Engine '" + e.path() + "' family=" + e.family() + " species=[";
        for (size_t k = 0; k < e.species().size(); ++k) s += (k ? "," : "") + e.species()[k];
        return s + "] cutoff=" + std::to_string(e.cutoff()) + ">";
      });
}
