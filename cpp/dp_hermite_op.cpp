// Tabulated training path of the Deep Potential se_e2_a embedding nets (DeepPotSeA(fused_step=h); the
// Python side is mlip/models/dp_fused.py). Why: the embedding net is a function of one scalar, s̃, but a
// training step evaluates it (value, s-derivative, and both backward passes of the force loss) on every
// edge slot, ~20k rows for 192 water atoms, which is ~40 % of the step. Within one step the weights are
// fixed, so the net is run (by torch.ops.mlip.dp_embedding) only on a uniform grid of nodes x0 + j·h that
// covers the batch's s̃, and each edge takes the cubic Hermite interpolant of (G, G') between its two
// nodes. The interpolant is linear in the node values, so gradients reach the weights exactly through the
// nodes; with h = 0.02 it differs from the net by ~5e-11 (G) and ~1e-8 (G') relative, see
// tests/test_dp_fused.py. The nodes are float64 whatever the model's dtype: G' comes from differences of
// node values over h, which in float32 would lose log10(1/h) digits (forces 3e-5 off instead of 6e-8); in
// float64 the interpolant is exact to float32 rounding, and the node grid is small (hundreds of rows).
// Exports never use this path: they run the net itself.
//
// Op: torch.ops.mlip.dp_hermite(s [E], Gn [n, M], Gn' [n, M] (float64), x0, h) -> (G [E, M], G' [E, M])
// in the dtype of s, with
//   u = (s − x0)/h, i = clamp(⌊u⌋, 0, n − 2), t = u − i,
//   G  = h00 Gn_i + h·h10 Gn'_i + h01 Gn_{i+1} + h·h11 Gn'_{i+1}      (h00 = 2t³ − 3t² + 1, h10 = t³ − 2t² + t,
//   G' = dG/ds (the interpolant's own derivative, so forces are     h01 = −2t³ + 3t², h11 = t³ − t²)
//        exactly −∂E/∂r of the interpolated model).
// Backward given (gG, gG'), in the same three cases as dp_embedding:
//   only s asked for, G' without gradient (the force pass): gs = Σ gG ⊙ G', an expression in the saved
//     output G', differentiable, whose gradient re-enters this op through G';
//   otherwise, without grad mode, the analytic transpose: gs = Σ gG ⊙ G' + Σ gG' ⊙ G'' and the
//     scatter of (gG, gG') onto the two nodes of each edge;
//   with grad mode on and anything else asked for (gradgradcheck only): the vector-Jacobian product of
//     the same interpolant written in ATen ops, differentiable to any order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "op_vjp.h"

namespace mlip {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 256;  // edges per parallel task

void check_inputs(const Tensor& s, const Tensor& g, const Tensor& gp, double h) {
  TORCH_CHECK(s.dim() == 1, "dp_hermite: s must be 1-D [edges], got shape ", s.sizes());
  TORCH_CHECK(s.device().is_cpu(), "dp_hermite: CPU tensors only, got ", s.device());
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble,
              "dp_hermite: s must be float32 or float64, got ", s.scalar_type());
  TORCH_CHECK(g.dim() == 2 && g.size(0) >= 2, "dp_hermite: node values must be [nodes >= 2, M], got ", g.sizes());
  TORCH_CHECK(gp.sizes() == g.sizes(), "dp_hermite: node derivatives ", gp.sizes(), " must match node values ",
              g.sizes());
  TORCH_CHECK(g.scalar_type() == at::kDouble && gp.scalar_type() == at::kDouble,
              "dp_hermite: nodes must be float64, got ", g.scalar_type(), " and ", gp.scalar_type());
  TORCH_CHECK(h > 0 && std::isfinite(h), "dp_hermite: the node spacing h must be positive, got ", h);
}

// The node interval and position of one s: (i, t) with i in [0, n − 2].
template <typename T>
inline void locate(T s, double x0, double h, int64_t n, int64_t& i, T& t) {
  const double u = (static_cast<double>(s) - x0) / h;
  i = std::min<int64_t>(std::max<int64_t>(static_cast<int64_t>(std::floor(u)), 0), n - 2);
  t = static_cast<T>(u - static_cast<double>(i));
}

// Hermite weights of one s: G = Σ a_k c_k and G' = Σ b_k c_k over the coefficients
// c = (Gn_i, Gn'_i, Gn_{i+1}, Gn'_{i+1}).
struct Basis {
  int64_t i;
  double a[4], b[4];
  Basis(double s, double x0, double h, int64_t n) {
    double t;
    locate<double>(s, x0, h, n, i, t);
    const double t2 = t * t, t3 = t2 * t, ih = 1.0 / h;
    a[0] = 2 * t3 - 3 * t2 + 1;
    a[1] = h * (t3 - 2 * t2 + t);
    a[2] = -2 * t3 + 3 * t2;
    a[3] = h * (t3 - t2);
    b[0] = (6 * t2 - 6 * t) * ih;
    b[1] = 3 * t2 - 4 * t + 1;
    b[2] = (-6 * t2 + 6 * t) * ih;
    b[3] = 3 * t2 - 2 * t;
  }
};

// dst0 += c0 · src, dst1 += c1 · src over M columns (the scatter of one edge onto its two nodes).
template <typename T>
inline void scatter_pair(double* dst0, double* dst1, double c0, double c1, const T* src, int64_t M) {
#pragma omp simd
  for (int64_t k = 0; k < M; ++k) {
    dst0[k] += c0 * src[k];
    dst1[k] += c1 * src[k];
  }
}

template <typename T>
void forward_kernel(const Tensor& s, const Tensor& g, const Tensor& gp, double x0, double h, Tensor& G, Tensor& Gp) {
  const int64_t E = s.size(0), n = g.size(0), M = g.size(1);
  const T* sv = s.data_ptr<T>();
  const double* gn = g.data_ptr<double>();
  const double* gpn = gp.data_ptr<double>();
  T* out = G.data_ptr<T>();
  T* outp = Gp.data_ptr<T>();
  at::parallel_for(0, E, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      const Basis w(static_cast<double>(sv[e]), x0, h, n);
      const int64_t i = w.i;
      const double a0 = w.a[0], a1 = w.a[1], a2 = w.a[2], a3 = w.a[3];
      const double b0 = w.b[0], b1 = w.b[1], b2 = w.b[2], b3 = w.b[3];
      const double* g0 = gn + i * M;
      const double* g1 = g0 + M;
      const double* p0 = gpn + i * M;
      const double* p1 = p0 + M;
      T* o = out + e * M;
      T* op = outp + e * M;
#pragma omp simd
      for (int64_t k = 0; k < M; ++k) {
        o[k] = static_cast<T>(a0 * g0[k] + a1 * p0[k] + a2 * g1[k] + a3 * p1[k]);
        op[k] = static_cast<T>(b0 * g0[k] + b1 * p0[k] + b2 * g1[k] + b3 * p1[k]);
      }
    }
  });
}

// Analytic transpose. gG / gGp may be null (no gradient). Writes gs [E] (if wanted) and accumulates the
// node gradients (if wanted); the scatter runs serially (edges share nodes).
template <typename T>
void backward_kernel(const Tensor& s, const Tensor& g, const Tensor& gp, double x0, double h, const Tensor& Gp,
                     const T* gG, const T* gGp, T* gs, double* gg, double* ggp) {
  const int64_t E = s.size(0), n = g.size(0), M = g.size(1);
  const T* sv = s.data_ptr<T>();
  const double* gn = g.data_ptr<double>();
  const double* gpn = gp.data_ptr<double>();
  const T* dG = Gp.data_ptr<T>();
  const double ih = 1.0 / h, ih2 = 1.0 / (h * h);
  if (gs) {
    at::parallel_for(0, E, kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t e = lo; e < hi; ++e) {
        double acc = 0;
        if (gG) {
          const T* a = gG + e * M;
          const T* d = dG + e * M;
#pragma omp simd reduction(+ : acc)
          for (int64_t k = 0; k < M; ++k) acc += static_cast<double>(a[k]) * d[k];
        }
        if (gGp) {  // + Σ gG' ⊙ G'' with G'' the interpolant's second derivative
          int64_t i;
          double t;
          locate<double>(static_cast<double>(sv[e]), x0, h, n, i, t);
          const double c0 = (12 * t - 6) * ih2, c1 = (6 * t - 4) * ih, c2 = (-12 * t + 6) * ih2, c3 = (6 * t - 2) * ih;
          const double* g0 = gn + i * M;
          const double* g1 = g0 + M;
          const double* p0 = gpn + i * M;
          const double* p1 = p0 + M;
          const T* a = gGp + e * M;
#pragma omp simd reduction(+ : acc)
          for (int64_t k = 0; k < M; ++k) acc += a[k] * (c0 * g0[k] + c1 * p0[k] + c2 * g1[k] + c3 * p1[k]);
        }
        gs[e] = static_cast<T>(acc);
      }
    });
  }
  if (!gg && !ggp) return;
  for (int64_t e = 0; e < E; ++e) {
    const Basis w(static_cast<double>(sv[e]), x0, h, n);
    const int64_t i = w.i;
    const T* a = gG ? gG + e * M : nullptr;
    const T* b = gGp ? gGp + e * M : nullptr;
    double* q0 = gg ? gg + i * M : nullptr;  // node values i, i + 1
    double* r0 = ggp ? ggp + i * M : nullptr;  // node slopes i, i + 1
    if (a && q0) scatter_pair(q0, q0 + M, w.a[0], w.a[2], a, M);
    if (a && r0) scatter_pair(r0, r0 + M, w.a[1], w.a[3], a, M);
    if (b && q0) scatter_pair(q0, q0 + M, w.b[0], w.b[2], b, M);
    if (b && r0) scatter_pair(r0, r0 + M, w.b[1], w.b[3], b, M);
  }
}

// The interpolant in ATen ops (differentiable to any order): the reference for higher-order use.
std::pair<Tensor, Tensor> forward_aten(const Tensor& s, const Tensor& g, const Tensor& gp, double x0, double h) {
  const int64_t n = g.size(0);
  Tensor u = (s.to(at::kDouble) - x0) / h;
  Tensor i = at::clamp(at::floor(u.detach()), 0, static_cast<double>(n - 2)).to(at::kLong);
  Tensor t = (u - i.to(at::kDouble)).unsqueeze(1);
  Tensor t2 = t * t, t3 = t2 * t;
  Tensor g0 = g.index_select(0, i), g1 = g.index_select(0, i + 1);
  Tensor p0 = gp.index_select(0, i), p1 = gp.index_select(0, i + 1);
  Tensor G = (2 * t3 - 3 * t2 + 1) * g0 + h * (t3 - 2 * t2 + t) * p0 + (-2 * t3 + 3 * t2) * g1 + h * (t3 - t2) * p1;
  Tensor Gp = (6 * t2 - 6 * t) / h * g0 + (3 * t2 - 4 * t + 1) * p0 + (-6 * t2 + 6 * t) / h * g1 + (3 * t2 - 2 * t) * p1;
  return {G.to(s.scalar_type()), Gp.to(s.scalar_type())};
}

class DPHermite : public torch::autograd::Function<DPHermite> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& s_in, const Tensor& g_in, const Tensor& gp_in,
                               double x0, double h) {
    check_inputs(s_in, g_in, gp_in, h);
    Tensor s = s_in.contiguous(), g = g_in.contiguous(), gp = gp_in.contiguous();
    Tensor G = at::empty({s.size(0), g.size(1)}, s.options());
    Tensor Gp = at::empty_like(G);
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "dp_hermite_forward",
                               [&] { forward_kernel<scalar_t>(s, g, gp, x0, h, G, Gp); });
    ctx->save_for_backward({s_in, g_in, gp_in, Gp});
    ctx->saved_data["x0"] = x0;
    ctx->saved_data["h"] = h;
    ctx->set_materialize_grads(false);
    return {G, Gp};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &s = saved[0], &g = saved[1], &gp = saved[2], &Gp = saved[3];
    const double x0 = ctx->saved_data["x0"].toDouble(), h = ctx->saved_data["h"].toDouble();
    const Tensor gG = grads[0], gGp = grads[1];
    variable_list out(5);
    if (!gG.defined() && !gGp.defined()) return out;
    const bool need_nodes = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    if (!need_nodes && !gGp.defined()) {  // the force pass: ds = Σ gG ⊙ G' (differentiable in G')
      if (ctx->needs_input_grad(0)) out[0] = (gG * Gp).sum(1);
      return out;
    }
    if (at::GradMode::is_enabled()) return reference_vjp(ctx, s, g, gp, x0, h, gG, gGp);
    Tensor a = gG.defined() ? gG.contiguous() : Tensor(), b = gGp.defined() ? gGp.contiguous() : Tensor();
    Tensor sc = s.contiguous(), gc = g.contiguous(), gpc = gp.contiguous(), Gpc = Gp.contiguous();
    Tensor gs = ctx->needs_input_grad(0) ? at::empty_like(sc) : Tensor();
    Tensor gg = ctx->needs_input_grad(1) ? at::zeros_like(gc) : Tensor();
    Tensor ggp = ctx->needs_input_grad(2) ? at::zeros_like(gpc) : Tensor();
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "dp_hermite_backward", [&] {
      backward_kernel<scalar_t>(sc, gc, gpc, x0, h, Gpc, a.defined() ? a.data_ptr<scalar_t>() : nullptr,
                                b.defined() ? b.data_ptr<scalar_t>() : nullptr,
                                gs.defined() ? gs.data_ptr<scalar_t>() : nullptr,
                                gg.defined() ? gg.data_ptr<double>() : nullptr,
                                ggp.defined() ? ggp.data_ptr<double>() : nullptr);
    });
    out[0] = gs;
    out[1] = gg;
    out[2] = ggp;
    return out;
  }

 private:
  static variable_list reference_vjp(AutogradContext* ctx, const Tensor& s, const Tensor& g, const Tensor& gp,
                                     double x0, double h, const Tensor& gG, const Tensor& gGp) {
    variable_list out(5), inputs;
    std::vector<size_t> slots;
    const Tensor* in[3] = {&s, &g, &gp};
    for (size_t k = 0; k < 3; ++k) {
      if (ctx->needs_input_grad(k) && in[k]->requires_grad()) {
        inputs.push_back(*in[k]);
        slots.push_back(k);
      }
    }
    if (inputs.empty()) return out;
    auto [G, Gp] = forward_aten(s, g, gp, x0, h);
    vjp_into(out, slots, inputs, G, Gp, gG, gGp);
    return out;
  }
};

std::tuple<Tensor, Tensor> dp_hermite(const Tensor& s, const Tensor& g, const Tensor& gp, double x0, double h) {
  variable_list out = DPHermite::apply(s, g, gp, x0, h);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace mlip

TORCH_LIBRARY_FRAGMENT(mlip, m) {
  m.def("dp_hermite(Tensor s, Tensor nodes, Tensor nodes_ds, float x0, float h) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mlip, CompositeImplicitAutograd, m) { m.impl("dp_hermite", &mlip::dp_hermite); }
