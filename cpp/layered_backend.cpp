// The layered backend (see layered_backend.h for why): embed → blocks with ghost-row exchange →
// readout, then the blocks' vector-Jacobian products in reverse with the reverse exchange, and the
// edge gradients into forces and virials (edge_scatter.h, the conventions of docs/CONTRACT.md).
#include "layered_backend.h"

#include "edge_scatter.h"
#include "engine.h"  // ModelError
#include "torch_errors.h"

#include <ATen/Functions.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace mlip {

namespace {

const char* const METHODS[] = {"layer_embed", "layer_forward", "layer_vjp", "layer_readout", "layer_grade"};

int64_t chunk_from_env() {
  const char* v = std::getenv("MLIP_LAYER_CHUNK");
  if (v && *v) {
    char* end = nullptr;
    long n = std::strtol(v, &end, 10);
    if (end && *end == '\0' && n > 0) return n;
  }
  return 64;
}

std::vector<c10::IValue> tuple_of(const c10::IValue& v, size_t n, const char* what) {
  if (!v.isTuple() || v.toTupleRef().elements().size() != n) {
    throw ModelError(std::string(what) + " returned " + v.tagKind() + ", expected a tuple of " + std::to_string(n));
  }
  const auto& e = v.toTupleRef().elements();
  return std::vector<c10::IValue>(e.begin(), e.end());
}

at::Tensor tensor_of(const c10::IValue& v, const char* what) {
  if (!v.isTensor()) throw ModelError(std::string(what) + " returned " + v.tagKind() + ", expected a tensor");
  return v.toTensor();
}

}  // namespace

bool LayeredBackend::accepts(const torch::jit::Module& module) {
  if (!module.hasattr("layer_widths")) return false;
  for (const char* m : METHODS)
    if (!module.find_method(m)) return false;
  return true;
}

LayeredBackend::LayeredBackend(torch::jit::Module module, at::ScalarType dtype, int num_threads, bool optimize)
    : module_(std::move(module)), dtype_(dtype), num_threads_(num_threads), optimize_(optimize),
      chunk_(chunk_from_env()) {
  auto w = module_.attr("layer_widths");
  if (!w.isList()) throw ModelError("attribute 'layer_widths' is " + w.tagKind() + ", expected List[int]");
  for (const auto& x : w.toListRef()) {
    if (!x.isInt()) throw ModelError("attribute 'layer_widths' contains a non-integer");
    widths_.push_back(x.toInt());
  }
  if (widths_.size() < 2) throw ModelError("attribute 'layer_widths' needs at least two entries");
  has_pair_ = module_.find_method("layer_pair").has_value();
}

const std::string& LayeredBackend::name() const {
  static const std::string n = "layered";
  return n;
}

int64_t LayeredBackend::max_width() const { return *std::max_element(widths_.begin(), widths_.end()); }

bool LayeredBackend::handles(const GraphInput& g) const {
  if (g.n_local < g.n_atoms && g.exchange == nullptr) return false;
  for (int64_t e = 0; e < g.n_edges; ++e) {
    if (g.edge_i[e] >= g.n_local) return false;
    if (e > 0 && g.edge_i[e] < g.edge_i[e - 1]) return false;
  }
  return true;
}

void LayeredBackend::exchange(at::Tensor& rows, const GraphInput& g, bool forward) const {
  // called whenever there is an exchange, even with no ghost here: it is collective (MPI)
  if (g.exchange == nullptr) return;
  const int64_t width = rows.size(1);
  at::Tensor d = rows.scalar_type() == at::kDouble && rows.is_contiguous() ? rows : rows.to(at::kDouble).contiguous();
  if (forward) {
    g.exchange->forward(d.data_ptr<double>(), width);
  } else {
    g.exchange->reverse(d.data_ptr<double>(), width);
  }
  if (!d.is_same(rows)) rows.copy_(d);
}

std::vector<at::Tensor> LayeredBackend::features(const GraphTensors& t, const GraphInput& g) {
  const int64_t n_layers = static_cast<int64_t>(widths_.size()) - 1;
  std::vector<at::Tensor> hs;
  at::Tensor h = tensor_of(module_.get_method("layer_embed")({t.species, c10::IValue(dtype_)}), "layer_embed");
  check_shape(h, {g.n_atoms, widths_[0]}, "layer_embed");
  hs.push_back(h);
  for (int64_t k = 0; k < n_layers; ++k) {
    at::Tensor out = tensor_of(module_.get_method("layer_forward")({c10::IValue(k), h, t.species, t.edge_index,
                                                                    t.edge_vec, c10::IValue(g.n_local),
                                                                    c10::IValue(chunk_)}),
                               "layer_forward");
    check_shape(out, {g.n_local, widths_[k + 1]}, "layer_forward");
    if (k + 1 < n_layers && g.exchange != nullptr) {
      h = at::zeros({g.n_atoms, widths_[k + 1]}, out.options());
      h.narrow(0, 0, g.n_local).copy_(out);
      exchange(h, g, true);
    } else {
      h = out;
    }
    hs.push_back(h);
  }
  return hs;
}

void LayeredBackend::compute(const GraphInput& g, const Outputs& out) {
  one_line_errors("model evaluation failed: ", [&] {
    ScriptCallScope scope(num_threads_, optimize_, true);
    const int64_t n_layers = static_cast<int64_t>(widths_.size()) - 1;
    const int64_t n_atoms = g.n_atoms, n_local = g.n_local;

    GraphTensors t = graph_tensors(g, dtype_);
    std::vector<at::Tensor> hs;
    {
      c10::NoGradGuard no_grad;  // the backward pass recomputes each block, chunk by chunk
      hs = features(t, g);
    }
    at::Tensor sp_local = t.species.narrow(0, 0, n_local);
    auto ro = tuple_of(module_.get_method("layer_readout")({hs[n_layers], sp_local}), 2, "layer_readout");
    at::Tensor e = tensor_of(ro[0], "layer_readout");
    at::Tensor gh = tensor_of(ro[1], "layer_readout");
    check_shape(e, {n_local}, "layer_readout energies");
    check_shape(gh, {n_local, widths_[n_layers]}, "layer_readout gradient");
    at::Tensor gvec = at::zeros({g.n_edges, 3}, at::TensorOptions().dtype(at::kDouble));
    if (has_pair_) {  // the two-body term: per-centre energies and edge gradients, no exchange
      auto pr = tuple_of(module_.get_method("layer_pair")({t.species, t.edge_index, t.edge_vec, c10::IValue(n_local)}),
                         2, "layer_pair");
      at::Tensor ep = tensor_of(pr[0], "layer_pair");
      at::Tensor gp = tensor_of(pr[1], "layer_pair");
      check_shape(ep, {n_local}, "layer_pair energies");
      check_shape(gp, {g.n_edges, 3}, "layer_pair edge gradient");
      e = at::add(e, ep.to(e.scalar_type()));
      gvec.add_(gp.to(at::kDouble));
    }
    for (int64_t k = n_layers - 1; k >= 0; --k) {
      const bool need_h = k > 0;
      auto r = tuple_of(module_.get_method("layer_vjp")({c10::IValue(k), hs[k], t.species, t.edge_index, t.edge_vec,
                                                         c10::IValue(n_local), c10::IValue(chunk_), gh,
                                                         c10::IValue(need_h)}),
                        2, "layer_vjp");
      at::Tensor gv = tensor_of(r[1], "layer_vjp");
      check_shape(gv, {g.n_edges, 3}, "layer_vjp edge gradient");
      gvec.add_(gv.to(at::kDouble));
      hs[k + 1] = at::Tensor();  // no longer needed
      if (need_h) {
        at::Tensor gall = tensor_of(r[0], "layer_vjp");
        check_shape(gall, {n_atoms, widths_[k]}, "layer_vjp feature gradient");
        exchange(gall, g, false);  // gradients on ghost rows belong to their owners
        gh = gall.narrow(0, 0, n_local);
      }
    }

    // energies of the locals (ghosts: 0), then forces and virials from the edge gradients
    at::Tensor ed = e.detach().to(at::kDouble).contiguous();
    const double* pe = ed.data_ptr<double>();
    double esum = 0.0;
    for (int64_t a = 0; a < n_local; ++a) esum += pe[a];
    *out.energy = esum;
    if (out.atom_energy) {
      std::memcpy(out.atom_energy, pe, sizeof(double) * n_local);
      std::fill(out.atom_energy + n_local, out.atom_energy + n_atoms, 0.0);
    }
    if (out.forces) std::fill(out.forces, out.forces + 3 * n_atoms, 0.0);
    if (out.atom_virial) std::fill(out.atom_virial, out.atom_virial + 9 * n_atoms, 0.0);
    double w9[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    const double* pg = gvec.data_ptr<double>();
    for (int64_t k = 0; k < g.n_edges; ++k) {
      scatter_edge_gradient(g.edge_i[k], g.edge_j[k], g.edge_vec + 3 * k, pg + 3 * k, out.forces, w9,
                            out.atom_virial);
    }
    if (out.virial) std::copy(w9, w9 + 9, out.virial);
  });
}

void LayeredBackend::grade(const GraphInput& g, double* gamma) {
  one_line_errors("extrapolation grade failed: ", [&] {
    ScriptCallScope scope(num_threads_, optimize_, false);
    GraphTensors t = graph_tensors(g, dtype_);
    std::vector<at::Tensor> hs = features(t, g);
    at::Tensor gam = tensor_of(module_.get_method("layer_grade")({hs.back(), t.species.narrow(0, 0, g.n_local)}),
                               "layer_grade");
    check_shape(gam, {g.n_local}, "gamma");
    if (g.n_local > 0) copy_out(gam, gamma);
  });
}

}  // namespace mlip
