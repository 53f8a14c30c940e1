// The TorchScript backend (see torchscript_backend.h for why): marshals the graph into tensors,
// calls the scripted method and copies its outputs back, checking every shape on the way.
#include "torchscript_backend.h"

#include "engine.h"  // InputError, ModelError
#include "graph_input.h"
#include "torch_errors.h"


#include <cstring>
#include <utility>
#include <vector>

namespace mlip {

TorchScriptBackend::TorchScriptBackend(torch::jit::Module module, at::ScalarType dtype,
                                       int num_threads, bool optimize, c10::Device device)
    : module_(std::move(module)), dtype_(dtype), num_threads_(num_threads), optimize_(optimize),
      device_(device) {}

namespace {
// the graph on the engine's device (no copy on the CPU)
GraphTensors on_device(GraphTensors t, const c10::Device& device) {
  if (!device.is_cpu()) {
    t.species = t.species.to(device);
    t.edge_index = t.edge_index.to(device);
    t.edge_vec = t.edge_vec.to(device);
  }
  return t;
}
}  // namespace

const std::string& TorchScriptBackend::name() const {
  static const std::string n = "torchscript";
  return n;
}

void TorchScriptBackend::compute(const GraphInput& g, const Outputs& out) {
  const int64_t n_atoms = g.n_atoms, n_local = g.n_local;
  one_line_errors("model evaluation failed: ", [&] {
    ScriptCallScope scope(num_threads_, optimize_, true);  // forces come from autograd inside the model

    GraphTensors t = on_device(graph_tensors(g, dtype_), device_);
    const bool want_atom_virial = out.atom_virial != nullptr;
    std::vector<c10::IValue> inputs{t.species, t.edge_index, t.edge_vec, c10::IValue(n_local),
                                    c10::IValue(want_atom_virial)};
    c10::IValue res = module_.forward(inputs);

    if (!res.isTuple()) throw ModelError("model returned " + res.tagKind() + ", expected a tuple");
    const auto& elems = res.toTupleRef().elements();
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
    *out.energy = esum;
    if (out.atom_energy) std::memcpy(out.atom_energy, pae, sizeof(double) * n_atoms);
    if (out.forces) copy_out(t_f, out.forces);
    if (out.virial) copy_out(t_w, out.virial);
    if (want_atom_virial) {
      at::Tensor t_av = elems[3].toTensor();
      check_shape(t_av, {n_atoms, 9}, "atom_virial");
      copy_out(t_av, out.atom_virial);
    }
  });
}

void TorchScriptBackend::grade(const GraphInput& g, double* gamma) {
  one_line_errors("extrapolation grade failed: ", [&] {
    ScriptCallScope scope(num_threads_, optimize_, false);
    GraphTensors t = on_device(graph_tensors(g, dtype_), device_);
    std::vector<c10::IValue> inputs{t.species, t.edge_index, t.edge_vec, c10::IValue(g.n_local)};
    c10::IValue res = module_.get_method("grade")(inputs);
    if (!res.isTensor()) throw ModelError("grade returned " + res.tagKind() + ", expected a tensor");
    at::Tensor gam = res.toTensor();
    check_shape(gam, {g.n_local}, "gamma");
    copy_out(gam, gamma);
  });
}

}  // namespace mlip
