// MTPBackend (native_backends.h): reads the scripted MTP's parameters into mlip::MTPParams and
// evaluates them with mlip::MTPKernel.
//
// Why a file of its own: mtp_kernel.cpp is plain arithmetic without torch headers (compiled at
// -O3); everything that knows the scripted module's attribute names (mlip.models.mtp.MTP) is here,
// the counterpart of DPKernel's constructor in dp_kernel.cpp.
#include "native_backends.h"

#include <ATen/core/Tensor.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mlip {

namespace {

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

bool MTPBackend::accepts(const torch::jit::Module& export_module) {
  if (!export_module.hasattr("model") || !export_module.attr("model").isModule()) return false;
  auto sub = export_module.attr("model").toModule();
  for (const char* a : {"radial_coeffs", "times_a", "basic_mono"})
    if (!sub.hasattr(a)) return false;
  return true;
}

MTPBackend::MTPBackend(const torch::jit::Module& export_module) : kernel_(mtp_params(export_module)) {}

const std::string& MTPBackend::name() const {
  static const std::string n = "native-mtp";
  return n;
}

void MTPBackend::compute(const GraphInput& g, const Outputs& out) {
  kernel_.compute(g.n_atoms, g.n_local, g.species, g.n_edges, g.edge_i, g.edge_j, g.edge_vec,
                  out.energy, out.atom_energy, out.forces, out.virial, out.atom_virial);
}

}  // namespace mlip
