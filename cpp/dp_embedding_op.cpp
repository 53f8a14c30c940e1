// Fused training path of one Deep Potential se_e2_a embedding net (mlip/models/dp_fused.py uses it;
// exports never do). Why: the force loss differentiates dE/dr, i.e. the embedding net's backward,
// once more. Under plain autograd that costs a recorded backward (first pass) and the backward of
// that backward (second pass), ~10 [edges x width] element-wise intermediates per layer. Here one
// forward pass carries the net in forward mode, so the first pass is a single product
// ds = Σ_k gG_k G'_k, and the second pass is one analytic reverse sweep over (value, tangent).
//
// Net (mlip.models.deepmd.ResMLP without the output layer, no resnet_dt), layer l, input X [E, n_in]:
//   z = X Wᵀ + b, y = tanh(z), X_next = skip(X) + y,   skip: 0 | X (same width) | [X, X] (doubling)
// and its s-derivative X' (X'_0 = 1):  z' = X' Wᵀ, y' = (1 − y²) z', X'_next = skip(X') + y'.
// Value and tangent rows are stacked, A_l = [X, 1; X', 0] [2E, n_in + 1], so each layer is one GEMM
// with the bias as one more weight column.
//
// Op: torch.ops.mlip.dp_embedding(s [E], weights [W_l], biases [b_l]) -> (G [E, M], G' [E, M]).
// Backward given (gG, gG'):
//   gs = Σ gG ⊙ G'   when only s is asked for and G' got no gradient: an expression in the saved
//        output G', so under create_graph it is differentiable (its gradient re-enters this op
//        through G', which is the force loss's path to the parameters);
//   otherwise, without grad mode, the analytic reverse sweep below (per layer, with d = 1 − y²):
//        gz' = gy' d,  gz = (gy − 2 y z' gy') d,  [gW | gb] = [gz; gz']ᵀ A,
//        gA_in = [gz; gz'] W + skipᵀ(gA_out);
//   with grad mode on and anything else asked for (never in training; gradgradcheck does), the
//   vector-Jacobian product of a recomputed ATen forward, differentiable to any order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "op_vjp.h"

namespace mlip {
namespace {

using at::Tensor;
using at::TensorList;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 64;  // rows per parallel task

// ResLayer's rule: 1 = same width (x + h), 2 = doubling ([x, x] + h), 0 = plain h
int layer_kind(int64_t n_in, int64_t n_out) { return n_out == n_in ? 1 : (n_out == 2 * n_in ? 2 : 0); }

void check_inputs(const Tensor& s, TensorList W, TensorList b) {
  TORCH_CHECK(s.dim() == 1, "dp_embedding: s must be 1-D [edges], got shape ", s.sizes());
  TORCH_CHECK(s.device().is_cpu(), "dp_embedding: CPU tensors only, got ", s.device());
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble,
              "dp_embedding: s must be float32 or float64, got ", s.scalar_type());
  TORCH_CHECK(!W.empty() && W.size() == b.size(), "dp_embedding: need as many biases as weights (>= 1), got ",
              W.size(), " weights and ", b.size(), " biases");
  int64_t n_in = 1;
  for (size_t l = 0; l < W.size(); ++l) {
    TORCH_CHECK(W[l].dim() == 2 && W[l].size(1) == n_in, "dp_embedding: weight ", l, " must be [n_out, ", n_in,
                "], got ", W[l].sizes());
    TORCH_CHECK(b[l].dim() == 1 && b[l].size(0) == W[l].size(0), "dp_embedding: bias ", l, " must be [",
                W[l].size(0), "], got ", b[l].sizes());
    TORCH_CHECK(W[l].scalar_type() == s.scalar_type() && b[l].scalar_type() == s.scalar_type(),
                "dp_embedding: weights and biases must have the dtype of s (", s.scalar_type(), ")");
    n_in = W[l].size(0);
  }
}

// Rows [X; X'] of a layer's input carry one more column, 1 in the value rows and 0 in the tangent rows,
// so that the bias is one more weight column: P = A [W | b]ᵀ = [z; z'] in one GEMM, and its backward
// [gz; gz']ᵀ A gives gW and gb together.

// Forward element-wise step of one layer: P = [z; z'] [2E, n] → [y; z'] in place (kept for the
// backward); writes X_next, X'_next as rows of stride ld (ld = n + 1: the next layer's input, with its
// 1/0 column; ld = n: the outputs G, G'). A = this layer's input [2E, n_in + 1].
template <typename T>
void forward_rows(Tensor& P, const Tensor& A, int kind, T* out_top, T* out_bot, int64_t ld) {
  const int64_t E = P.size(0) / 2, n = P.size(1), lda = A.size(1), n_in = lda - 1;
  P.narrow(0, 0, E).tanh_();  // ATen's vectorised tanh
  const T* p = P.data_ptr<T>();
  const T* a = A.data_ptr<T>();
  at::parallel_for(0, E, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      const T* y = p + e * n;
      const T* zp = p + (E + e) * n;
      const T* x = a + e * lda;
      const T* xp = a + (E + e) * lda;
      T* o = out_top + e * ld;
      T* op = out_bot + e * ld;
#pragma omp simd
      for (int64_t k = 0; k < n; ++k) {
        o[k] = y[k];
        op[k] = (T(1) - y[k] * y[k]) * zp[k];
      }
      for (int64_t half = 0; kind != 0 && half < (kind == 2 ? 2 : 1); ++half) {
#pragma omp simd
        for (int64_t k = 0; k < n_in; ++k) {
          o[half * n_in + k] += x[k];
          op[half * n_in + k] += xp[k];
        }
      }
      if (ld > n) {
        o[n] = T(1);
        op[n] = T(0);
      }
    }
  });
}

// Backward element-wise step of one layer. In: gy, gy' = rows of the gradient of X_next, X'_next
// (top, bot: [E, n] each) and S = [y; z']. Out: gz = [gz; gz'] [2E, n] and, for a skip layer,
// rest = skipᵀ([gy; gy']) [2E, n_in].
template <typename T>
void backward_rows(const T* top, const T* bot, const Tensor& S, int kind, int64_t n_in, T* gz, T* rest) {
  const int64_t E = S.size(0) / 2, n = S.size(1);
  const T* s = S.data_ptr<T>();
  at::parallel_for(0, E, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      const T* gy = top + e * n;
      const T* gyp = bot + e * n;
      const T* y = s + e * n;
      const T* zp = s + (E + e) * n;
      T* o = gz + e * n;
      T* op = gz + (E + e) * n;
#pragma omp simd
      for (int64_t k = 0; k < n; ++k) {
        const T d = T(1) - y[k] * y[k];
        o[k] = (gy[k] - T(2) * y[k] * zp[k] * gyp[k]) * d;
        op[k] = gyp[k] * d;
      }
      if (kind == 0) continue;
      T* r = rest + e * n_in;
      T* rp = rest + (E + e) * n_in;
#pragma omp simd
      for (int64_t k = 0; k < n_in; ++k) {
        r[k] = kind == 2 ? gy[k] + gy[n_in + k] : gy[k];
        rp[k] = kind == 2 ? gyp[k] + gyp[n_in + k] : gyp[k];
      }
    }
  });
}

struct ForwardPass {
  Tensor G, Gp;                  // [E, M]
  std::vector<Tensor> A, S;      // per layer: input [X, 1; X', 0] [2E, n_in + 1], [y; z'] [2E, n_out]
};

ForwardPass forward_pass(const Tensor& s, TensorList W, TensorList b) {
  const int64_t E = s.size(0);
  const size_t L = W.size();
  ForwardPass f;
  Tensor A = at::zeros({2 * E, 2}, s.options());  // [s, 1; 1, 0]
  A.narrow(0, 0, E).select(1, 0).copy_(s);
  A.narrow(0, 0, E).select(1, 1).fill_(1);
  A.narrow(0, E, E).select(1, 0).fill_(1);
  for (size_t l = 0; l < L; ++l) {
    const int64_t n_in = W[l].size(1), n = W[l].size(0);
    Tensor P = at::mm(A, at::cat({W[l], b[l].unsqueeze(1)}, 1).t());  // [2E, n]
    const bool last = l + 1 == L;
    Tensor next;
    if (last) {
      f.G = at::empty({E, n}, s.options());
      f.Gp = at::empty({E, n}, s.options());
    } else {
      next = at::empty({2 * E, n + 1}, s.options());
    }
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "dp_embedding_forward", [&] {
      scalar_t* top = last ? f.G.data_ptr<scalar_t>() : next.data_ptr<scalar_t>();
      scalar_t* bot = last ? f.Gp.data_ptr<scalar_t>() : next.data_ptr<scalar_t>() + E * (n + 1);
      forward_rows<scalar_t>(P, A, layer_kind(n_in, n), top, bot, last ? n : n + 1);
    });
    f.A.push_back(A);
    f.S.push_back(P);
    A = next;
  }
  return f;
}

// The same net as differentiable ATen ops (the reference for any higher-order use): (G, G').
std::pair<Tensor, Tensor> forward_aten(const Tensor& s, TensorList W, TensorList b) {
  Tensor X = s.unsqueeze(1), Xp = at::ones_like(X);
  for (size_t l = 0; l < W.size(); ++l) {
    const int kind = layer_kind(W[l].size(1), W[l].size(0));
    Tensor y = at::tanh(at::addmm(b[l], X, W[l].t()));
    Tensor yp = (1 - y * y) * at::mm(Xp, W[l].t());
    if (kind == 1) {
      X = X + y;
      Xp = Xp + yp;
    } else if (kind == 2) {
      X = at::cat({X, X}, 1) + y;
      Xp = at::cat({Xp, Xp}, 1) + yp;
    } else {
      X = y;
      Xp = yp;
    }
  }
  return {X, Xp};
}

class DPEmbedding : public torch::autograd::Function<DPEmbedding> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& s_in, TensorList W_in, TensorList b_in) {
    check_inputs(s_in, W_in, b_in);
    Tensor s = s_in.contiguous();
    std::vector<Tensor> W, b;
    for (size_t l = 0; l < W_in.size(); ++l) {
      W.push_back(W_in[l].contiguous());
      b.push_back(b_in[l].contiguous());
    }
    ForwardPass f = forward_pass(s, W, b);
    // saved: s, W_l, b_l (inputs, for the grad-mode fallback), G' (output), then A_l, S_l
    variable_list save{s_in};
    save.insert(save.end(), W_in.begin(), W_in.end());
    save.insert(save.end(), b_in.begin(), b_in.end());
    save.push_back(f.Gp);
    save.insert(save.end(), f.A.begin(), f.A.end());
    save.insert(save.end(), f.S.begin(), f.S.end());
    ctx->save_for_backward(save);
    ctx->saved_data["n_layers"] = static_cast<int64_t>(W.size());
    ctx->set_materialize_grads(false);
    return {f.G, f.Gp};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto L = static_cast<size_t>(ctx->saved_data["n_layers"].toInt());
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& s = saved[0];
    const std::vector<Tensor> W(saved.begin() + 1, saved.begin() + 1 + L);
    const std::vector<Tensor> b(saved.begin() + 1 + L, saved.begin() + 1 + 2 * L);
    const Tensor& Gp = saved[1 + 2 * L];
    const Tensor gG = grads[0], gGp = grads[1];
    variable_list out(1 + 2 * L);
    bool need_params = false;
    for (size_t i = 1; i < 1 + 2 * L; ++i) need_params = need_params || ctx->needs_input_grad(i);
    if (!gG.defined() && !gGp.defined()) return out;
    if (!need_params && !gGp.defined()) {  // the force pass: ds = Σ gG ⊙ G' (differentiable in G')
      if (ctx->needs_input_grad(0)) out[0] = (gG * Gp).sum(1);
      return out;
    }
    if (at::GradMode::is_enabled()) return reference_vjp(ctx, s, W, b, gG, gGp);

    const int64_t E = s.size(0);
    Tensor top = gG.defined() ? gG.contiguous() : at::zeros_like(Gp);
    Tensor bot = gGp.defined() ? gGp.contiguous() : at::zeros_like(Gp);
    Tensor gA;  // [2E, n] gradient of the current layer's output rows (after the last layer)
    for (size_t l = L; l-- > 0;) {
      const Tensor& A = saved[2 + 2 * L + l];
      const Tensor& S = saved[2 + 3 * L + l];
      const int64_t n_in = W[l].size(1), n = W[l].size(0);
      const int kind = layer_kind(n_in, n);
      Tensor gz = at::empty({2 * E, n}, s.options());
      Tensor rest = kind != 0 ? at::empty({2 * E, n_in}, s.options()) : Tensor();
      AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "dp_embedding_backward", [&] {
        const scalar_t* t = gA.defined() ? gA.data_ptr<scalar_t>() : top.data_ptr<scalar_t>();
        const scalar_t* u = gA.defined() ? gA.data_ptr<scalar_t>() + E * n : bot.data_ptr<scalar_t>();
        backward_rows<scalar_t>(t, u, S, kind, n_in, gz.data_ptr<scalar_t>(),
                                rest.defined() ? rest.data_ptr<scalar_t>() : nullptr);
      });
      if (ctx->needs_input_grad(1 + l) || ctx->needs_input_grad(1 + L + l)) {
        Tensor gWb = at::mm(gz.t(), A);  // [n, n_in + 1] = [gW | gb]
        if (ctx->needs_input_grad(1 + l)) out[1 + l] = gWb.narrow(1, 0, n_in).contiguous();
        if (ctx->needs_input_grad(1 + L + l)) out[1 + L + l] = gWb.select(1, n_in).contiguous();
      }
      if (l > 0) {
        gA = rest.defined() ? rest.addmm_(gz, W[l]) : at::mm(gz, W[l]);  // [2E, n_in]
      } else if (ctx->needs_input_grad(0)) {  // the tangent rows' input is the constant 1
        Tensor gs = at::mm(gz.narrow(0, 0, E), W[0]);
        out[0] = (rest.defined() ? gs + rest.narrow(0, 0, E) : gs).squeeze(1);
      }
    }
    return out;
  }

 private:
  // Differentiable vector-Jacobian product through forward_aten (higher-order derivatives).
  static variable_list reference_vjp(AutogradContext* ctx, const Tensor& s, const std::vector<Tensor>& W,
                                     const std::vector<Tensor>& b, const Tensor& gG, const Tensor& gGp) {
    const size_t L = W.size();
    variable_list out(1 + 2 * L), inputs;
    std::vector<size_t> slots;
    auto want = [&](size_t i, const Tensor& t) {
      if (ctx->needs_input_grad(i) && t.requires_grad()) {
        inputs.push_back(t);
        slots.push_back(i);
      }
    };
    want(0, s);
    for (size_t l = 0; l < L; ++l) want(1 + l, W[l]);
    for (size_t l = 0; l < L; ++l) want(1 + L + l, b[l]);
    if (inputs.empty()) return out;
    auto [G, Gp] = forward_aten(s, W, b);
    vjp_into(out, slots, inputs, G, Gp, gG, gGp);
    return out;
  }
};

std::tuple<Tensor, Tensor> dp_embedding(const Tensor& s, TensorList weights, TensorList biases) {
  variable_list out = DPEmbedding::apply(s, weights, biases);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace mlip

TORCH_LIBRARY(mlip, m) {
  m.def("dp_embedding(Tensor s, Tensor[] weights, Tensor[] biases) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mlip, CompositeImplicitAutograd, m) { m.impl("dp_embedding", &mlip::dp_embedding); }
