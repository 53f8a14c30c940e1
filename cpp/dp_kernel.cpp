// Native Deep Potential (se_e2_a) evaluation: see dp_kernel.h for why. Mirrors
// mlip.models.deepmd.DeepPotSeA exactly:
//   s = sw(u)/r, u = clamp((r − rs)/(rc − rs), 0, 1), sw = u³(−6u² + 15u − 10) + 1
//   R̃ = [s, s x/r, s y/r, s z/r] / r_std[t_i],  s̃ = (s − s_avg[t_i]) / s_std[t_i]
//   G = embedding_k(s̃) (k = t_j, or t_i·n + t_j), T_i = (1/Σsel) Σ_j G ⊗ R̃   [M1 x 4]
//   D_i = T_i T_i[:M2]ᵀ,  E_i = bias[t_i] + fit_{t_i}(D_i) − fit_{t_i}(0)
// Reverse pass: fitting nets (input gradient only) → ∂E/∂T → per edge ∂E/∂G, ∂E/∂R̃ → with the
// forward-mode dG/ds̃ → ∂E/∂r_ij.
#include "dp_kernel.h"
#include "edge_scatter.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mlip {

namespace {

struct Layer {
  int64_t n_in = 0, n_out = 0;
  int kind = 0;  // 0 plain, 1 x + h, 2 [x, x] + h
  bool use_dt = false;
  at::Tensor W, Wt, b, dt;  // W [n_out, n_in], Wt = Wᵀ contiguous, b/dt [n_out]
};

struct Net {
  std::vector<Layer> layers;
  bool has_out = false;
  at::Tensor wout;  // [width]
  double bout = 0.0;
  double at_zero = 0.0;  // fitting nets: value at D = 0
};

at::Tensor dbl(const c10::IValue& v) { return v.toTensor().detach().to(at::kDouble).contiguous().clone(); }

Net read_net(const torch::jit::Module& net) {
  Net out;
  auto layers = net.attr("layers").toModule();
  for (int k = 0; layers.hasattr(std::to_string(k)); ++k) {
    auto l = layers.attr(std::to_string(k)).toModule();
    auto lin = l.attr("linear").toModule();
    Layer L;
    L.W = dbl(lin.attr("weight"));
    L.b = dbl(lin.attr("bias"));
    L.Wt = L.W.t().contiguous();
    L.n_out = L.W.size(0);
    L.n_in = L.W.size(1);
    L.kind = static_cast<int>(l.attr("kind").toInt());
    L.use_dt = l.attr("use_dt").toBool();
    L.dt = dbl(l.attr("dt"));
    out.layers.push_back(std::move(L));
  }
  if (out.layers.empty()) throw std::invalid_argument("DP net without layers");
  out.has_out = net.attr("has_out").toBool();
  if (out.has_out) {
    auto o = net.attr("out").toModule();
    out.wout = dbl(o.attr("weight")).reshape({-1});
    out.bout = dbl(o.attr("bias")).reshape({-1})[0].item<double>();
  }
  return out;
}

// One net on the rows of X (forward), keeping what the reverse pass needs (tanh of every layer).
at::Tensor net_forward(const Net& net, at::Tensor X, std::vector<at::Tensor>* tanhs) {
  for (const auto& L : net.layers) {
    at::Tensor h = at::tanh(at::addmm(L.b, X, L.Wt));
    if (tanhs) tanhs->push_back(h);
    if (L.use_dt) h = h * L.dt;
    if (L.kind == 1) {
      X = X + h;
    } else if (L.kind == 2) {
      X = at::cat({X, X}, 1) + h;
    } else {
      X = h;
    }
  }
  return X;
}

// Embedding net in forward mode: (G, dG/ds̃) for the column s̃ [n, 1].
void embed_forward(const Net& net, const at::Tensor& s_in, at::Tensor& G, at::Tensor& Gd) {
  at::Tensor X = s_in, Xd = at::ones_like(s_in);
  for (const auto& L : net.layers) {
    at::Tensor h = at::tanh(at::addmm(L.b, X, L.Wt));
    at::Tensor hd = at::mm(Xd, L.Wt).mul_(at::rsub(h * h, 1.0));
    if (L.use_dt) {
      h.mul_(L.dt);
      hd.mul_(L.dt);
    }
    if (L.kind == 1) {
      X = X + h;
      Xd = Xd + hd;
    } else if (L.kind == 2) {
      X = at::cat({X, X}, 1).add_(h);
      Xd = at::cat({Xd, Xd}, 1).add_(hd);
    } else {
      X = h;
      Xd = hd;
    }
  }
  G = X.contiguous();
  Gd = Xd.contiguous();
}

// An embedding net G(x) (scalar x -> M1 channels) as quintic Hermite pieces on [lo, lo + n h]: each
// piece matches G, G' and G'' of the net at both ends (forward mode, second order), so the error is
// O(h^6 G^(6)) — at h = 0.01 far below float64 round-off of the rest of the model (measured in
// tests/test_dp_native.py). coef [n, 6, M1] in powers of t = (x − x_k)/h (channel-contiguous, so
// evaluation vectorises).
struct Table {
  double lo = 0.0, h = 0.0;
  int64_t n = 0, m1 = 0;
  std::vector<double> coef;
};

Table build_table(const Net& net, double lo, double hi, double h) {
  Table t;
  t.lo = lo;
  t.h = h;
  t.n = std::max<int64_t>(1, static_cast<int64_t>(std::ceil((hi - lo) / h)));
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor X = at::arange(t.n + 1, f64).mul_(h).add_(lo).unsqueeze(1);
  at::Tensor Xd = at::ones_like(X), Xdd = at::zeros_like(X);
  for (const auto& L : net.layers) {
    at::Tensor z = at::addmm(L.b, X, L.Wt), zd = at::mm(Xd, L.Wt), zdd = at::mm(Xdd, L.Wt);
    at::Tensor th = at::tanh(z), d1 = at::rsub(th * th, 1.0);  // tanh' = 1 − tanh², tanh'' = −2 tanh tanh'
    at::Tensor h0 = th, h1 = d1 * zd, h2 = d1 * zdd - 2.0 * th * d1 * zd * zd;
    if (L.use_dt) {
      h0 = h0 * L.dt;
      h1 = h1 * L.dt;
      h2 = h2 * L.dt;
    }
    if (L.kind == 1) {
      X = X + h0;
      Xd = Xd + h1;
      Xdd = Xdd + h2;
    } else if (L.kind == 2) {
      X = at::cat({X, X}, 1) + h0;
      Xd = at::cat({Xd, Xd}, 1) + h1;
      Xdd = at::cat({Xdd, Xdd}, 1) + h2;
    } else {
      X = h0;
      Xd = h1;
      Xdd = h2;
    }
  }
  X = X.contiguous();
  Xd = (Xd * h).contiguous();         // derivatives in units of t
  Xdd = (Xdd * (h * h)).contiguous();
  t.m1 = X.size(1);
  t.coef.resize(static_cast<size_t>(t.n) * t.m1 * 6);
  const double *f = X.data_ptr<double>(), *d = Xd.data_ptr<double>(), *dd = Xdd.data_ptr<double>();
  for (int64_t k = 0; k < t.n; ++k) {
    for (int64_t c = 0; c < t.m1; ++c) {
      const double f0 = f[k * t.m1 + c], f1 = f[(k + 1) * t.m1 + c];
      const double d0 = d[k * t.m1 + c], d1v = d[(k + 1) * t.m1 + c];
      const double e0 = dd[k * t.m1 + c], e1 = dd[(k + 1) * t.m1 + c];
      double* q = t.coef.data() + k * 6 * t.m1 + c;
      const int64_t M = t.m1;
      q[0 * M] = f0;
      q[1 * M] = d0;
      q[2 * M] = 0.5 * e0;
      q[3 * M] = 10.0 * (f1 - f0) - 6.0 * d0 - 4.0 * d1v - 1.5 * e0 + 0.5 * e1;
      q[4 * M] = -15.0 * (f1 - f0) + 8.0 * d0 + 7.0 * d1v + 1.5 * e0 - e1;
      q[5 * M] = 6.0 * (f1 - f0) - 3.0 * d0 - 3.0 * d1v - 0.5 * e0 + 0.5 * e1;
    }
  }
  return t;
}

// G (and dG/dx if gd) of the table at x; false if x is outside it.
inline bool eval_table(const Table& t, double x, double* g, double* gd) {
  const double pos = (x - t.lo) / t.h;
  if (!(pos >= 0.0 && pos < static_cast<double>(t.n))) return false;
  const int64_t piece = static_cast<int64_t>(pos), M = t.m1;
  const double u = pos - static_cast<double>(piece);
  const double* c = t.coef.data() + piece * 6 * M;
  const double *c0 = c, *c1 = c + M, *c2 = c + 2 * M, *c3 = c + 3 * M, *c4 = c + 4 * M, *c5 = c + 5 * M;
#pragma omp simd
  for (int64_t a = 0; a < M; ++a) g[a] = c0[a] + u * (c1[a] + u * (c2[a] + u * (c3[a] + u * (c4[a] + u * c5[a]))));
  if (gd) {
    const double inv_h = 1.0 / t.h;
#pragma omp simd
    for (int64_t a = 0; a < M; ++a)
      gd[a] = (c1[a] + u * (2.0 * c2[a] + u * (3.0 * c3[a] + u * (4.0 * c4[a] + u * 5.0 * c5[a])))) * inv_h;
  }
  return true;
}

}  // namespace

struct DPKernel::Impl {
  int n_sp = 0;
  double rcut = 0, rcut_smth = 0, inv_nnei = 0;
  int64_t m1 = 0, m2 = 0;
  bool type_one_side = false;
  std::vector<double> s_avg, s_std, r_std, bias;  // r_std [n_sp, 4]
  std::vector<Net> embedding, fitting;
  std::vector<Table> tables;  // one per embedding net, empty when MLIP_DP_TABLE=0
  // scratch reused between calls (no page faults from fresh multi-MB allocations every step;
  // the engine serialises calls)
  std::vector<double> G, Gd, T, gT, D, gD;
  std::vector<int64_t> slot;
  static constexpr int64_t kChunk = 512;
};

DPKernel::DPKernel(const torch::jit::Module& mod) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.n_sp = static_cast<int>(mod.attr("n_species").toInt());
  m.rcut = mod.attr("rcut").toDouble();
  m.rcut_smth = mod.attr("rcut_smth").toDouble();
  m.inv_nnei = mod.attr("inv_nnei").toDouble();
  m.m1 = mod.attr("m1").toInt();
  m.m2 = mod.attr("m2").toInt();
  m.type_one_side = mod.attr("type_one_side").toBool();
  auto vec = [&](const char* name) {
    at::Tensor t = dbl(mod.attr(name));
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  };
  m.s_avg = vec("s_avg");
  m.s_std = vec("s_std");
  m.r_std = vec("r_std");
  m.bias = vec("energy_bias");
  auto emb = mod.attr("embedding").toModule();
  for (int k = 0; emb.hasattr(std::to_string(k)); ++k) m.embedding.push_back(read_net(emb.attr(std::to_string(k)).toModule()));
  auto fit = mod.attr("fitting").toModule();
  for (int k = 0; fit.hasattr(std::to_string(k)); ++k) m.fitting.push_back(read_net(fit.attr(std::to_string(k)).toModule()));
  const size_t n = static_cast<size_t>(m.n_sp);
  if (m.embedding.size() != (m.type_one_side ? n : n * n) || m.fitting.size() != n ||
      m.s_avg.size() != n || m.s_std.size() != n || m.r_std.size() != 4 * n || m.bias.size() != n)
    throw std::invalid_argument("DP parameters: inconsistent sizes");
  for (const auto& e : m.embedding)
    if (e.layers.front().n_in != 1 || e.layers.back().n_out != m.m1) throw std::invalid_argument("DP embedding net shape");
  // tables over s̃ for s in [0, 1/r_lo] (r_lo = 0.5 Å); closer pairs take the exact path
  const char* tab = std::getenv("MLIP_DP_TABLE");
  if (!(tab && std::string(tab) == "0")) {
    constexpr double kRlo = 0.5, kStep = 0.01;
    for (size_t k = 0; k < m.embedding.size(); ++k) {
      double lo = 1e300, hi = -1e300;  // s̃ range over the centre species using this net
      for (int ti = 0; ti < m.n_sp; ++ti) {
        if (!m.type_one_side && static_cast<int>(k) / m.n_sp != ti) continue;
        lo = std::min(lo, (0.0 - m.s_avg[ti]) / m.s_std[ti]);
        hi = std::max(hi, (1.0 / kRlo - m.s_avg[ti]) / m.s_std[ti]);
      }
      m.tables.push_back(build_table(m.embedding[k], lo - kStep, hi + kStep, kStep));
    }
  }
  for (auto& f : m.fitting) {
    if (!f.has_out || f.layers.front().n_in != m.m1 * m.m2) throw std::invalid_argument("DP fitting net shape");
    at::Tensor y = net_forward(f, at::zeros({1, m.m1 * m.m2}, at::kDouble), nullptr);
    f.at_zero = at::dot(y.reshape({-1}), f.wout).item<double>() + f.bout;
  }
}

DPKernel::~DPKernel() = default;

void DPKernel::compute(int64_t n_atoms, int64_t n_local, const int64_t* species, int64_t n_edges,
                       const int64_t* edge_i, const int64_t* edge_j, const double* edge_vec,
                       double* energy, double* atom_energy, double* forces, double* virial,
                       double* atom_virial) {
  Impl& m = *impl_;
  const int n_sp = m.n_sp;
  const int64_t M1 = m.m1, M2 = m.m2, ND = M1 * M2;
  const double rc = m.rcut, rs = m.rcut_smth;
  const bool want_grad = forces || virial || atom_virial;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);

  // edges inside the cutoff, grouped by embedding net
  const int n_nets = static_cast<int>(m.embedding.size());
  std::vector<int64_t> count(n_nets + 1, 0);
  std::vector<int> net_of(n_edges, -1);
  for (int64_t e = 0; e < n_edges; ++e) {
    const double* v = edge_vec + 3 * e;
    const double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    if (!(r2 < rc * rc) || r2 <= 0.0) continue;
    const int ti = static_cast<int>(species[edge_i[e]]), tj = static_cast<int>(species[edge_j[e]]);
    net_of[e] = m.type_one_side ? tj : ti * n_sp + tj;
    count[net_of[e] + 1]++;
  }
  for (int k = 0; k < n_nets; ++k) count[k + 1] += count[k];
  const int64_t n_in = count[n_nets];
  std::vector<int64_t> order(n_in);
  {
    std::vector<int64_t> cur(count.begin(), count.end() - 1);
    for (int64_t e = 0; e < n_edges; ++e)
      if (net_of[e] >= 0) order[cur[net_of[e]]++] = e;
  }

  // per-edge geometry (in `order`), G and dG/ds̃ of every edge, T per atom
  std::vector<double> es(n_in), er(n_in), eu(3 * n_in), eR(4 * n_in), ds_dr(n_in);
  std::vector<double>& T = m.T;
  T.assign(static_cast<size_t>(n_atoms) * M1 * 4, 0.0);
  std::vector<double> s_tilde(n_in);
  for (int64_t q = 0; q < n_in; ++q) {
    const int64_t e = order[q];
    const double* v = edge_vec + 3 * e;
    const double r = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    const int ti = static_cast<int>(species[edge_i[e]]);
    double u = (r - rs) / (rc - rs);
    double dsw = 0.0;
    if (u <= 0.0) {
      u = 0.0;
    } else if (u >= 1.0) {
      u = 1.0;
    } else {
      dsw = -30.0 * u * u * (u - 1.0) * (u - 1.0) / (rc - rs);
    }
    const double sw = u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0;
    const double s = sw / r;
    es[q] = s;
    er[q] = r;
    ds_dr[q] = dsw / r - sw / (r * r);
    const double* rsd = m.r_std.data() + 4 * ti;
    for (int c = 0; c < 3; ++c) eu[3 * q + c] = v[c] / r;
    eR[4 * q] = s / rsd[0];
    for (int c = 0; c < 3; ++c) eR[4 * q + 1 + c] = s * v[c] / r / rsd[1 + c];
    s_tilde[q] = (s - m.s_avg[ti]) / m.s_std[ti];
  }
  // G of every edge, accumulated into T right away. Tabulated edges keep nothing (the reverse
  // pass re-evaluates the table); the others (closer than the table, or MLIP_DP_TABLE=0) keep G and
  // dG/ds̃ in slot[q] of m.G / m.Gd.
  at::Tensor s_in = at::empty({Impl::kChunk, 1}, f64);
  std::vector<int64_t>& slot = m.slot;
  slot.assign(n_in, -1);
  std::vector<int64_t> exact;
  std::vector<double> gbuf(M1);
  auto accumulate_T = [&](int64_t q, const double* g) {
    double* Ti = T.data() + edge_i[order[q]] * M1 * 4;
    const double* R = eR.data() + 4 * q;
    for (int64_t a = 0; a < M1; ++a) {
      Ti[4 * a] += g[a] * R[0];
      Ti[4 * a + 1] += g[a] * R[1];
      Ti[4 * a + 2] += g[a] * R[2];
      Ti[4 * a + 3] += g[a] * R[3];
    }
  };
  for (int k = 0; k < n_nets; ++k) {
    const Table* tb = m.tables.empty() ? nullptr : &m.tables[k];
    for (int64_t q = count[k]; q < count[k + 1]; ++q) {
      if (tb && eval_table(*tb, s_tilde[q], gbuf.data(), nullptr)) {
        accumulate_T(q, gbuf.data());
      } else {
        slot[q] = static_cast<int64_t>(exact.size());
        exact.push_back(q);
      }
    }
  }
  m.G.resize(exact.size() * M1);
  m.Gd.resize(exact.size() * M1);
  for (size_t c0 = 0; c0 < exact.size();) {
    const int net = net_of[order[exact[c0]]];
    size_t c1 = c0;
    while (c1 < exact.size() && c1 - c0 < static_cast<size_t>(Impl::kChunk) && net_of[order[exact[c1]]] == net) ++c1;
    const int64_t n = static_cast<int64_t>(c1 - c0);
    double* sp = s_in.data_ptr<double>();
    for (size_t k2 = c0; k2 < c1; ++k2) sp[k2 - c0] = s_tilde[exact[k2]];
    at::Tensor G, Gd;
    embed_forward(m.embedding[net], s_in.narrow(0, 0, n), G, Gd);
    std::memcpy(m.G.data() + c0 * M1, G.data_ptr<double>(), sizeof(double) * n * M1);
    std::memcpy(m.Gd.data() + c0 * M1, Gd.data_ptr<double>(), sizeof(double) * n * M1);
    for (size_t k2 = c0; k2 < c1; ++k2) accumulate_T(exact[k2], m.G.data() + k2 * M1);
    c0 = c1;
  }
  for (double& x : T) x *= m.inv_nnei;

  // Nodes that need the fitting net: the locals and any ghost that is an edge centre. Every other
  // node (the LAMMPS ghosts of a local model: half the nodes on 2 ranks) has D = 0 and therefore
  // exactly its species' bias, so the fitting net — the dominant cost once G is tabulated — is
  // never run for it.
  std::vector<char> fit(n_atoms, 0);
  std::fill(fit.begin(), fit.begin() + n_local, 1);
  for (int64_t q = 0; q < n_in; ++q) fit[edge_i[order[q]]] = 1;

  // descriptor D_i = T T[:M2]ᵀ
  m.D.resize(static_cast<size_t>(n_atoms) * ND);
  at::Tensor D = at::from_blob(m.D.data(), {n_atoms, ND}, f64);
  double* Dp = D.data_ptr<double>();
  for (int64_t i = 0; i < n_atoms; ++i) {
    if (!fit[i]) continue;
    const double* Ti = T.data() + i * M1 * 4;
    double* Di = Dp + i * ND;
    for (int64_t a = 0; a < M1; ++a)
      for (int64_t b = 0; b < M2; ++b)
        Di[a * M2 + b] = Ti[4 * a] * Ti[4 * b] + Ti[4 * a + 1] * Ti[4 * b + 1] + Ti[4 * a + 2] * Ti[4 * b + 2] +
                         Ti[4 * a + 3] * Ti[4 * b + 3];
  }

  // fitting nets per species: energies and ∂E/∂D (locals only)
  std::vector<double> ae(n_atoms);
  for (int64_t i = 0; i < n_atoms; ++i) ae[i] = m.bias[species[i]];
  m.gD.assign(static_cast<size_t>(n_atoms) * ND, 0.0);
  at::Tensor gD = at::from_blob(m.gD.data(), {n_atoms, ND}, f64);
  for (int t = 0; t < n_sp; ++t) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < n_atoms; ++i)
      if (species[i] == t && fit[i]) idx.push_back(i);
    if (idx.empty()) continue;
    at::Tensor index = at::from_blob(idx.data(), {static_cast<int64_t>(idx.size())}, at::kLong).clone();
    const Net& net = m.fitting[t];
    std::vector<at::Tensor> tanhs;
    at::Tensor y = net_forward(net, D.index_select(0, index), &tanhs);
    at::Tensor e = at::mv(y, net.wout);
    const double* ep = e.data_ptr<double>();
    for (size_t q = 0; q < idx.size(); ++q) ae[idx[q]] = m.bias[t] + ep[q] + net.bout - net.at_zero;
    if (!want_grad) continue;
    at::Tensor g = net.wout.unsqueeze(0).expand({static_cast<int64_t>(idx.size()), net.wout.size(0)});
    for (size_t l = net.layers.size(); l-- > 0;) {
      const Layer& L = net.layers[l];
      at::Tensor gh = L.use_dt ? g * L.dt : g;
      at::Tensor gz = gh * at::rsub(tanhs[l] * tanhs[l], 1.0);
      at::Tensor gx = at::mm(gz, L.W);
      if (L.kind == 1) {
        gx.add_(g);
      } else if (L.kind == 2) {
        gx.add_(g.narrow(1, 0, L.n_in)).add_(g.narrow(1, L.n_in, L.n_in));
      }
      g = gx;
    }
    gD.index_copy_(0, index, g.contiguous());
  }
  double esum = 0.0;
  for (int64_t i = 0; i < n_local; ++i) esum += ae[i];
  if (atom_energy) std::memcpy(atom_energy, ae.data(), sizeof(double) * n_atoms);
  *energy = esum;
  if (!want_grad) {
    if (virial) std::fill(virial, virial + 9, 0.0);
    return;
  }

  // ∂E/∂T_raw (T_raw = Σ_j G ⊗ R̃, before 1/Σsel), zero for ghost centres
  std::vector<double> gdbuf(M1);
  std::vector<double>& gT = m.gT;
  gT.assign(static_cast<size_t>(n_atoms) * M1 * 4, 0.0);
  const double* gDp = gD.data_ptr<double>();
  for (int64_t i = 0; i < n_local; ++i) {
    const double* Ti = T.data() + i * M1 * 4;
    const double* g = gDp + i * ND;
    double* o = gT.data() + i * M1 * 4;
    for (int64_t a = 0; a < M1; ++a) {
      for (int64_t b = 0; b < M2; ++b) {
        const double x = g[a * M2 + b];
        if (x == 0.0) continue;
        for (int c = 0; c < 4; ++c) {
          o[4 * a + c] += x * Ti[4 * b + c];
          o[4 * b + c] += x * Ti[4 * a + c];
        }
      }
    }
    for (int64_t k = 0; k < M1 * 4; ++k) o[k] *= m.inv_nnei;
  }

  if (forces) std::fill(forces, forces + 3 * n_atoms, 0.0);
  if (atom_virial) std::fill(atom_virial, atom_virial + 9 * n_atoms, 0.0);
  double w[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t q = 0; q < n_in; ++q) {
    const int64_t e = order[q], i = edge_i[e], j = edge_j[e];
    if (i >= n_local) continue;
    const int ti = static_cast<int>(species[i]);
    const double* o = gT.data() + i * M1 * 4;
    const double *g, *gd;
    if (slot[q] >= 0) {
      g = m.G.data() + slot[q] * M1;
      gd = m.Gd.data() + slot[q] * M1;
    } else {
      eval_table(m.tables[net_of[e]], s_tilde[q], gbuf.data(), gdbuf.data());
      g = gbuf.data();
      gd = gdbuf.data();
    }
    const double* R = eR.data() + 4 * q;
    double gsin = 0.0, gR[4] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t a = 0; a < M1; ++a) {
      const double gG = o[4 * a] * R[0] + o[4 * a + 1] * R[1] + o[4 * a + 2] * R[2] + o[4 * a + 3] * R[3];
      gsin += gG * gd[a];
      gR[0] += o[4 * a] * g[a];
      gR[1] += o[4 * a + 1] * g[a];
      gR[2] += o[4 * a + 2] * g[a];
      gR[3] += o[4 * a + 3] * g[a];
    }
    const double* rsd = m.r_std.data() + 4 * ti;
    const double s = es[q], r = er[q];
    const double* u = eu.data() + 3 * q;
    double dEds = gsin / m.s_std[ti] + gR[0] / rsd[0];
    double dEdu[3];
    for (int c = 0; c < 3; ++c) {
      dEds += gR[1 + c] * u[c] / rsd[1 + c];
      dEdu[c] = gR[1 + c] * s / rsd[1 + c];
    }
    const double udot = dEdu[0] * u[0] + dEdu[1] * u[1] + dEdu[2] * u[2];
    double g3[3];
    for (int c = 0; c < 3; ++c) g3[c] = dEds * ds_dr[q] * u[c] + (dEdu[c] - udot * u[c]) / r;
    scatter_edge_gradient(i, j, edge_vec + 3 * e, g3, forces, w, atom_virial);
  }
  if (virial) std::copy(w, w + 9, virial);
}

}  // namespace mlip
