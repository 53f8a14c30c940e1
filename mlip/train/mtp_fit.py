"""MTP fitting the MLIP way: full-batch quasi-Newton on the whole training set, with the linear
coefficients (species energies, moment coefficients) solved exactly by least squares for the current
radial coefficients.

Loss (the common one, `mlip.train.loss`): mean over frames (frame weights w) of
    p_e (ΔE/N)² + p_f/(3N) Σ_i |ΔF_i|² + p_v/9 ‖ΔW‖²       (W: virial in eV, LAMMPS sign)
with MLIP-2's default weights available as `weights="mlip"` (p_e = 1, p_f = 0.01, p_v = 0.001).

Given the radial coefficients the model is linear in ξ = (species_coeffs, moment_coeffs), so the loss
is a linear least-squares problem in ξ. `solve_linear` builds its rows (energy: [n_s, Σ_i B(i)];
forces and virials from ∂ΣB/∂r_e, computed per atom as J_i·d_e without any backward pass per basis
function, see `basis_design`) and solves them with an incremental QR (never the normal equations:
the MTP basis is very ill-conditioned).

Optimisers (`fit(..., optimizer=)`):
  "varpro" (default)  variable projection: L-BFGS (strong Wolfe) over the radial coefficients only;
                      every evaluation solves ξ exactly, so the gradient (envelope theorem) is that of
                      the reduced loss. Far fewer evaluations than a joint fit.
  "lbfgs"             joint L-BFGS over all parameters, the linear block in whitened coordinates,
                      cycles of [exact linear solve → L-BFGS].
  "adam"              plain Adam on the full batch (the lead's trainer is the place for mini-batches).
Stops at `max_iter` evaluations, `max_time`, after `patience` evaluations without relative improvement
`min_rel_improvement`, or on SIGTERM/SIGINT (command line: finishes, saves and evaluates).

Command line (a recipe is a YAML file, see training/mtp_*.yaml; data paths relative to the recipe):
    python -m mlip.train.mtp_fit training/mtp_mo.yaml [--out DIR] [--max-iter N] [--max-time S] [--level L]
writes DIR/model.mtp (MLIP-2), DIR/model.pt (float64 export), DIR/model_state.pth, DIR/metrics.json
(train/test MAE and RMSE, training time) and logs to stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

if "numpy" not in sys.modules:  # one BLAS thread unless asked: threaded BLAS thrashes on shared machines
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from mlip.active.graph import frame_graph
from mlip.export import forces_virials_from_edges

MLIP_WEIGHTS = {"energy": 1.0, "forces": 0.01, "virial": 0.001}
_STOP = {"requested": False}  # set by SIGTERM/SIGINT in the CLI: finish the current evaluation, then save


def _request_stop(signum, frame) -> None:  # pragma: no cover - signal handler
    _STOP["requested"] = True


@dataclass
class Chunk:
    """Several frames as one disjoint graph, with labels and per-frame loss factors."""

    species: Tensor
    edge_index: Tensor
    edge_vec: Tensor
    node_frame: Tensor
    edge_frame: Tensor
    n_atoms: Tensor  # [B]
    energy: Tensor  # [B]
    e_mask: Tensor
    forces: Tensor  # [N, 3]
    f_mask: Tensor  # [N]
    virial: Tensor  # [B, 3, 3]
    v_mask: Tensor
    weight: Tensor  # [B]
    frames: List[int]

    @property
    def n_frames(self) -> int:
        return int(self.n_atoms.shape[0])


def make_chunks(frames: Sequence[Any], species: Sequence[str], cutoff: float, max_edges: int = 20000,
                dtype: torch.dtype = torch.float64) -> List[Chunk]:
    chunks: List[Chunk] = []
    cur: List[Tuple[int, Any, Tuple[Tensor, Tensor, Tensor]]] = []
    n_edges = 0

    def flush():
        nonlocal cur, n_edges
        if not cur:
            return
        sp, ei, ev, nf, ef = [], [], [], [], []
        off = 0
        for b, (_, fr, (s, e, v)) in enumerate(cur):
            sp.append(s)
            ei.append(e + off)
            ev.append(v)
            nf.append(torch.full((len(s),), b, dtype=torch.long))
            ef.append(torch.full((e.shape[1],), b, dtype=torch.long))
            off += len(s)
        frs = [fr for _, fr, _ in cur]
        nat = torch.tensor([len(f.symbols) for f in frs], dtype=dtype)
        en = torch.tensor([f.energy if f.energy is not None else 0.0 for f in frs], dtype=dtype)
        em = torch.tensor([f.energy is not None for f in frs])
        fo = torch.cat([torch.as_tensor(f.forces, dtype=dtype) if f.forces is not None
                        else torch.zeros(len(f.symbols), 3, dtype=dtype) for f in frs])
        fm = torch.cat([torch.full((len(f.symbols),), f.forces is not None) for f in frs])
        vi = torch.stack([torch.as_tensor(np.asarray(f.virial).reshape(3, 3), dtype=dtype) if f.virial is not None
                          else torch.zeros(3, 3, dtype=dtype) for f in frs])
        vm = torch.tensor([f.virial is not None for f in frs])
        w = torch.tensor([float(getattr(f, "weight", 1.0)) for f in frs], dtype=dtype)
        chunks.append(Chunk(torch.cat(sp), torch.cat(ei, 1), torch.cat(ev), torch.cat(nf), torch.cat(ef), nat, en,
                            em, fo, fm, vi, vm, w, [k for k, _, _ in cur]))
        cur, n_edges = [], 0

    for k, fr in enumerate(frames):
        g = frame_graph(fr, species, cutoff, dtype)
        ne = int(g[1].shape[1])
        if cur and n_edges + ne > max_edges:
            flush()
        cur.append((k, fr, g))
        n_edges += ne
    flush()
    return chunks


def predict_chunk(model, c: Chunk, create_graph: bool, need_virial: bool = True, fn=None
                  ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    vec = c.edge_vec.detach().requires_grad_(True)
    ae = (fn or model)(c.species, c.edge_index, vec)
    energy = torch.zeros(c.n_frames, dtype=ae.dtype).index_add(0, c.node_frame, ae)
    (g,) = torch.autograd.grad(energy.sum(), vec, create_graph=create_graph)
    forces, ev = forces_virials_from_edges(g, c.edge_index, vec, int(c.species.shape[0]))
    vir = None
    if need_virial:
        vir = torch.zeros(c.n_frames, 9, dtype=ae.dtype).index_add(0, c.edge_frame, ev.reshape(-1, 9)).reshape(-1, 3, 3)
    return energy, forces, vir


def chunk_loss(model, c: Chunk, w: Dict[str, float], create_graph: bool = True, fn=None) -> Tensor:
    """Σ_frames w_c × per-frame loss (not yet divided by Σ w)."""
    need_v = w["virial"] > 0 and bool(c.v_mask.any())
    e, f, v = predict_chunk(model, c, create_graph, need_v, fn)
    n = c.n_atoms
    per = w["energy"] * ((e - c.energy) / n).pow(2) * c.e_mask
    df = (f - c.forces).pow(2).sum(1) * c.f_mask
    per = per + w["forces"] * torch.zeros_like(n).index_add(0, c.node_frame, df) / (3.0 * n)
    if need_v and v is not None:
        per = per + w["virial"] * (v - c.virial).pow(2).sum((1, 2)) / 9.0 * c.v_mask
    return (c.weight * per).sum()


def chunks_loss(model, chunks: Sequence[Chunk], w: Dict[str, float]) -> float:
    """The loss (as in `loss_and_grad`) without any parameter gradient: validation."""
    wsum = float(sum(float(c.weight.sum()) for c in chunks))
    return float(sum(float(chunk_loss(model, c, w, create_graph=False).detach()) for c in chunks)) / max(wsum, 1e-300)


def loss_and_grad(model, chunks: Sequence[Chunk], w: Dict[str, float], params: Sequence[Tensor], fn=None
                  ) -> Tuple[float, List[Tensor]]:
    wsum = float(sum(float(c.weight.sum()) for c in chunks))
    grads = [torch.zeros_like(p) for p in params]
    total = 0.0
    for c in chunks:
        loss = chunk_loss(model, c, w, fn=fn) / wsum
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, g in zip(grads, gs):
            if g is not None:
                acc += g
        total += float(loss.detach())
    return total, grads


# ------------------------------------------------------------------------------------- linear solve
class _IncrementalQR:
    """R and Qᵀy of a tall least-squares problem fed by row blocks (torch, so that it honours
    torch.set_num_threads; float64)."""

    def __init__(self, n: int) -> None:
        self.R = torch.zeros(0, n, dtype=torch.float64)
        self.qty = torch.zeros(0, dtype=torch.float64)
        self.lost = 0.0  # |y|^2 outside the range of Q (part of every residual)

    def add(self, rows: np.ndarray, rhs: np.ndarray) -> None:
        a = torch.cat([self.R, torch.as_tensor(rows, dtype=torch.float64)])
        b = torch.cat([self.qty, torch.as_tensor(rhs, dtype=torch.float64)])
        q, r = torch.linalg.qr(a, mode="reduced")
        self.R = r
        self.qty = q.T @ b
        self.lost += max(0.0, float(b @ b) - float(self.qty @ self.qty))

    def _svd(self):
        scale = torch.linalg.norm(self.R, dim=0)
        scale[scale == 0] = 1.0
        u, s, vt = torch.linalg.svd(self.R / scale, full_matrices=False)
        return scale, u, s, vt

    def whitening(self, rcond: float = 1e-13) -> np.ndarray:
        """T (n × k) with ξ = T z making the least-squares Hessian in z the identity (k = kept rank)."""
        scale, _, s, vt = self._svd()
        keep = s > rcond * s[0]
        return ((vt[keep].T / s[keep]) / scale[:, None]).numpy()

    def solve(self, rcond: float = 1e-13) -> np.ndarray:
        scale, u, s, vt = self._svd()
        keep = s > rcond * s[0]
        x = vt[keep].T @ ((u[:, keep].T @ self.qty) / s[keep])
        return (x / scale).numpy()

    def residual2(self, x: np.ndarray) -> float:
        xt = torch.as_tensor(x, dtype=torch.float64)
        return self.lost + float(((self.R @ xt - self.qty) ** 2).sum())


class _SparseTangent:
    """Index plan for forward-mode derivatives through alpha_index_times that only carries the basic
    moments each moment actually depends on (a contraction of ≤ 4 moments depends on few of them)."""

    def __init__(self, model) -> None:
        nb = model.n_basic
        times = list(zip(model.times_a.tolist(), model.times_b.tolist(), model.times_m.tolist(),
                         model.times_c.tolist()))
        deps: Dict[int, List[int]] = {k: [k] for k in range(nb)}
        for a, b, _, c in times:
            deps.setdefault(c, [])
            merged = set(deps[c]) | set(deps[a]) | set(deps[b])
            deps[c] = sorted(merged)
        offset: Dict[int, int] = {}
        pos: Dict[Tuple[int, int], int] = {}
        n = 0
        for mom in sorted(deps):
            offset[mom] = n
            for k in deps[mom]:
                pos[(mom, k)] = n
                n += 1
        self.n_entries = n
        self.init = torch.tensor([pos[(k, k)] for k in range(nb)], dtype=torch.long)
        self.gens = []
        for g in range(len(model.gen_offsets) - 1):
            s, e = model.gen_offsets[g], model.gen_offsets[g + 1]
            src, mul, dst, coef = [], [], [], []
            for a, b, m, c in times[s:e]:
                for k in deps[a]:
                    src.append(pos[(a, k)]); mul.append(b); dst.append(pos[(c, k)]); coef.append(m)
                for k in deps[b]:
                    src.append(pos[(b, k)]); mul.append(a); dst.append(pos[(c, k)]); coef.append(m)
            self.gens.append((torch.tensor(src, dtype=torch.long), torch.tensor(mul, dtype=torch.long),
                              torch.tensor(dst, dtype=torch.long), torch.tensor(coef, dtype=torch.float64)))
        out_e, out_a, out_k = [], [], []
        for alpha, mom in enumerate(model.mapping.tolist()):
            for k in deps[mom]:
                out_e.append(pos[(mom, k)]); out_a.append(alpha); out_k.append(k)
        self.out_e = torch.tensor(out_e, dtype=torch.long)
        self.out_a = torch.tensor(out_a, dtype=torch.long)
        self.out_k = torch.tensor(out_k, dtype=torch.long)


_PLANS: Dict[int, Tuple[Any, _SparseTangent]] = {}


def contract_jacobian(model, mb: Tensor) -> Tensor:
    """∂B(i)/∂Mb(i) for each row of mb [n, n_basic] -> [n, A, n_basic] (sparse forward mode through
    alpha_index_times; rows of one generation only read complete moments)."""
    key = id(model)
    if key not in _PLANS or _PLANS[key][0] is not model:
        _PLANS[key] = (model, _SparseTangent(model))
    plan = _PLANS[key][1]
    n, nb = mb.shape
    M = model.contract(mb)
    T = torch.zeros(n, plan.n_entries, dtype=mb.dtype)
    T[:, plan.init] = 1.0
    for src, mul, dst, coef in plan.gens:
        T.index_add_(1, dst, T.index_select(1, src) * M.index_select(1, mul) * coef.to(mb.dtype))
    J = torch.zeros(n, model.n_alpha * nb, dtype=mb.dtype)
    J[:, plan.out_a * nb + plan.out_k] = T.index_select(1, plan.out_e)
    return J.view(n, model.n_alpha, nb)


_MONO_PLANS: Dict[int, Tuple[Any, Dict[str, Tensor]]] = {}


def _mono_plan(model) -> Dict[str, Tensor]:
    key = id(model)
    if key in _MONO_PLANS and _MONO_PLANS[key][0] is model:
        return _MONO_PLANS[key][1]
    from mlip.models.mtp_basis import multisets

    comps = [c for nu in range(model.max_nu + 1) for c in multisets(nu)]
    pos = {c: k for k, c in enumerate(comps)}
    low = torch.zeros(len(comps), 3, dtype=torch.long)
    coef = torch.zeros(len(comps), 3, dtype=torch.float64)
    for k, c in enumerate(comps):
        for ax in range(3):
            if c[ax] > 0:
                lc = list(c)
                lc[ax] -= 1
                low[k, ax] = pos[tuple(lc)]
                coef[k, ax] = c[ax]
    nu = torch.tensor([sum(c) for c in comps], dtype=torch.float64)
    plan = {"low": low, "coef": coef, "nu": nu}
    _MONO_PLANS[key] = (model, plan)
    return plan


def edge_basic_and_gradient(model, species: Tensor, edge_index: Tensor, vec: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-edge basic-moment contributions b_e [E, nb] (= model.edge_basic) and ∂b_e/∂r_e as [E, 3, nb],
    analytically: b = f_μ(r) m(u), ∂b/∂r = f'_μ(r) m u + f_μ (∇_u m − ν m u) / r."""
    dtype = vec.dtype
    i = edge_index[0]
    r = torch.linalg.norm(vec, dim=1)
    inside = (r < model.cutoff).to(dtype)
    rmin = float(model.rb_min)
    rmax = model.cutoff
    sc = float(model.rb_scaling)
    ksi = (2.0 * r - (rmin + rmax)) / (rmax - rmin)
    dksi = 2.0 / (rmax - rmin)
    T = [torch.ones_like(r), ksi]
    dT = [torch.zeros_like(r), torch.ones_like(r)]
    for k in range(2, model.radial_basis_size):
        T.append(2.0 * ksi * T[k - 1] - T[k - 2])
        dT.append(2.0 * T[k - 1] + 2.0 * ksi * dT[k - 1] - dT[k - 2])
    T = torch.stack(T[: model.radial_basis_size], 1)
    dT = torch.stack(dT[: model.radial_basis_size], 1)
    env = (rmax - r) * inside
    q = sc * T * (env * env).unsqueeze(1)
    dq = sc * (dT * dksi * (env * env).unsqueeze(1) - 2.0 * T * env.unsqueeze(1))
    C = model.radial_coeffs.detach().to(dtype)
    S = model.n_species
    if S == 1:
        f = q @ C[0, 0].T
        fp = dq @ C[0, 0].T
    else:
        pair = species[i] * S + species[edge_index[1]]
        c = C.reshape(S * S, model.n_mu, model.radial_basis_size)[pair]
        f = (c * q.unsqueeze(1)).sum(2)
        fp = (c * dq.unsqueeze(1)).sum(2)
    u = vec / r.unsqueeze(1)
    prev = torch.ones_like(r).unsqueeze(1)
    monos = [prev]
    for nu in range(1, model.max_nu + 1):
        prev = torch.cat([prev * u[:, 0:1], prev[:, prev.shape[1] - nu:] * u[:, 1:2],
                          prev[:, prev.shape[1] - 1:] * u[:, 2:3]], 1)
        monos.append(prev)
    mono = torch.cat(monos, 1)  # [E, n_mono]
    plan = _mono_plan(model)
    low, coef, nuv = plan["low"], plan["coef"].to(dtype), plan["nu"].to(dtype)
    grad_u = torch.stack([mono.index_select(1, low[:, ax]) * coef[:, ax] for ax in range(3)], 1)  # [E, 3, nm]
    dmono = (grad_u - u.unsqueeze(2) * (nuv * mono).unsqueeze(1)) / r.view(-1, 1, 1)  # [E, 3, nm]
    if model.fast_basic:
        bparts, dparts = [], []
        for m_, cnt in enumerate(model.basic_blocks):
            mo = mono[:, :cnt]
            bparts.append(f[:, m_:m_ + 1] * mo)
            dparts.append((fp[:, m_:m_ + 1] * mo).unsqueeze(1) * u.unsqueeze(2)
                          + f[:, m_:m_ + 1].unsqueeze(2) * dmono[:, :, :cnt])
        return torch.cat(bparts, 1), torch.cat(dparts, 2)
    mu = model.basic_mu
    mi = model.basic_mono
    fb = f.index_select(1, mu)
    mb_ = mono.index_select(1, mi)
    basic = fb * mb_
    d = (fp.index_select(1, mu) * mb_).unsqueeze(1) * u.unsqueeze(2) + fb.unsqueeze(1) * dmono.index_select(2, mi)
    return basic, d


def basis_design(model, species: Tensor, edge_index: Tensor, edge_vec: Tensor, node_frame: Tensor,
                 n_frames: int, need_virial: bool = False, atom_chunk: Optional[int] = None
                 ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Design of the linear model E = Σ_i Σ_α ξ_α B_α(i):  B [N, A], the basis "forces"
    Fd [N, 3, A] (Fd_l = Σ_{e: i_e=l} g_e − Σ_{e: j_e=l} g_e with g_e = ∂ΣB/∂r_e, i.e. what
    `forces_virials_from_edges` makes of g) and, if asked, the basis virials Vd [n_frames, 3, 3, A]
    (−Σ_e r_e ⊗ g_e), all without A backward passes.

    r_e only enters its centre's basic moments, so g_e = J_i · d_e with J_i = ∂B(i)/∂Mb(i)
    ([A, n_basic], sparse forward mode per atom) and d_e = ∂b_e/∂r_e ([n_basic, 3], analytic).
    Per-edge products come from one batched matmul over atoms with their edges padded; the centre
    side and the virial only need per-atom sums of d_e."""
    nb, A = model.n_basic, model.n_alpha
    N, E = int(species.shape[0]), int(edge_vec.shape[0])
    vec = edge_vec.detach()
    dtype = vec.dtype
    with torch.no_grad():
        basic, d = edge_basic_and_gradient(model, species, edge_index, vec)  # [E, nb], [E, 3, nb]
        i, j = edge_index[0], edge_index[1]
        mb = torch.zeros(N, nb, dtype=dtype).index_add(0, i, basic)
        B = model.contract(mb).index_select(1, model.mapping)
        if E > 1 and bool((i[1:] < i[:-1]).any()):
            order = torch.argsort(i, stable=True)
            i, j, d, vec = i[order], j[order], d[order], vec[order]
        deg = torch.bincount(i, minlength=N)
        start = torch.cumsum(deg, 0) - deg
        pos = torch.arange(E) - start[i]
        Fd = torch.zeros(N + 1, 3 * A, dtype=dtype)  # [atom, (xyz, α)]; last row: padding sink
        Vd = torch.zeros(n_frames, 9, A, dtype=dtype) if need_virial else None
        if need_virial:
            # H_i[(a,b), n] = Σ_{e∈i} r_e,a d_e[b, n]
            H = torch.zeros(N, 9 * nb, dtype=dtype).index_add(
                0, i, (vec.view(E, 3, 1, 1) * d.unsqueeze(1)).reshape(E, 9 * nb))
        if atom_chunk is None:
            atom_chunk = max(8, int(2e7 // max(1, nb * (model.n_moments + A))))
        for a0 in range(0, N, atom_chunk):
            a1 = min(N, a0 + atom_chunk)
            n = a1 - a0
            J = contract_jacobian(model, mb[a0:a1])  # [n, A, nb]
            Jt = J.transpose(1, 2)  # [n, nb, A]
            if need_virial:
                Vd.index_add_(0, node_frame[a0:a1], -torch.bmm(H[a0:a1].view(n, 9, nb), Jt))
            e0, e1 = int(start[a0]), int(start[a1 - 1] + deg[a1 - 1])
            if e1 <= e0:
                continue
            pp = pos[e0:e1]
            dmax = int(pp.max()) + 1
            flat = (i[e0:e1] - a0) * dmax + pp
            D = torch.zeros(n * dmax, 3 * nb, dtype=dtype)
            D.index_copy_(0, flat, d[e0:e1].reshape(-1, 3 * nb))
            G = torch.bmm(D.view(n, dmax * 3, nb), Jt)  # [n, dmax*3, A]: g_e per (atom, slot, xyz)
            Fd[a0:a1] += G.view(n, dmax, 3 * A).sum(1)
            target = torch.full((n * dmax,), N, dtype=torch.long)
            target[flat] = j[e0:e1]
            Fd.index_add_(0, target, G.view(n * dmax, 3 * A), alpha=-1.0)
        Fd = Fd[:N].view(N, 3, A)
        if need_virial:
            Vd = Vd.view(n_frames, 3, 3, A)
    return B, Fd, Vd


def linear_rows(model, c: Chunk, w: Dict[str, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares rows (energy, force, virial) of one chunk for ξ = (species, moment) coeffs."""
    S = model.n_species
    need_v = w["virial"] > 0 and bool(c.v_mask.any())
    B, Fd, Vd = basis_design(model, c.species, c.edge_index, c.edge_vec, c.node_frame, c.n_frames, need_v)
    A = B.shape[1]
    N = int(c.species.shape[0])
    nf = c.n_frames
    n = c.n_atoms.numpy()
    wt = c.weight.numpy()
    rows, rhs = [], []
    Ef = torch.zeros(nf, A, dtype=B.dtype).index_add(0, c.node_frame, B).numpy()
    counts = np.zeros((nf, S))
    np.add.at(counts, (c.node_frame.numpy(), c.species.numpy()), 1.0)
    em = c.e_mask.numpy()
    if w["energy"] > 0 and em.any():
        sw = np.sqrt(w["energy"] * wt) / n
        rows.append((np.hstack([counts, Ef]) * sw[:, None])[em])
        rhs.append((c.energy.numpy() * sw)[em])
    if w["forces"] > 0 and bool(c.f_mask.any()):
        F = Fd.reshape(N * 3, A).numpy()  # rows (atom, xyz)
        fr_of = np.repeat(c.node_frame.numpy(), 3)
        sw = np.sqrt(w["forces"] * wt[fr_of] / (3.0 * n[fr_of]))
        fm = np.repeat(c.f_mask.numpy(), 3)
        rows.append((np.hstack([np.zeros((N * 3, S)), F]) * sw[:, None])[fm])
        rhs.append((c.forces.numpy().reshape(-1) * sw)[fm])
    vm = c.v_mask.numpy()
    if need_v and Vd is not None:
        V = Vd.reshape(nf * 9, A).numpy()
        fr_of = np.repeat(np.arange(nf), 9)
        sw = np.sqrt(w["virial"] * wt[fr_of] / 9.0)
        m9 = np.repeat(vm, 9)
        rows.append((np.hstack([np.zeros((nf * 9, S)), V]) * sw[:, None])[m9])
        rhs.append((c.virial.numpy().reshape(-1) * sw)[m9])
    if not rows:
        return np.zeros((0, S + A)), np.zeros(0)
    return np.vstack(rows), np.concatenate(rhs)


def _split(c: Chunk, max_edges: int) -> List[Chunk]:
    """Split a chunk into frame-aligned sub-chunks of at most ~max_edges edges."""
    if int(c.edge_index.shape[1]) <= max_edges or c.n_frames == 1:
        return [c]
    ne = torch.bincount(c.edge_frame, minlength=c.n_frames).tolist()
    groups, cur, acc = [], [], 0
    for b in range(c.n_frames):
        if cur and acc + ne[b] > max_edges:
            groups.append(cur)
            cur, acc = [], 0
        cur.append(b)
        acc += ne[b]
    groups.append(cur)
    out = []
    for g in groups:
        fsel = torch.tensor(g)
        nmask = torch.isin(c.node_frame, fsel)
        emask = torch.isin(c.edge_frame, fsel)
        new_idx = torch.cumsum(nmask.long(), 0) - 1
        remap = torch.full((c.n_frames,), -1, dtype=torch.long)
        remap[fsel] = torch.arange(len(g))
        out.append(Chunk(c.species[nmask], new_idx[c.edge_index[:, emask]], c.edge_vec[emask],
                         remap[c.node_frame[nmask]], remap[c.edge_frame[emask]], c.n_atoms[fsel], c.energy[fsel],
                         c.e_mask[fsel], c.forces[nmask], c.f_mask[nmask], c.virial[fsel], c.v_mask[fsel],
                         c.weight[fsel], [c.frames[b] for b in g]))
    return out


def solve_linear(model, chunks: Sequence[Chunk], w: Dict[str, float], rcond: float = 1e-13,
                 return_qr: bool = False):
    """Set species_coeffs and moment_coeffs to the exact least-squares optimum; returns the loss
    (and the factorisation, with return_qr)."""
    S, A = model.n_species, model.n_alpha
    qr = _IncrementalQR(S + A)
    wsum = float(sum(float(c.weight.sum()) for c in chunks))
    for c in chunks:
        for sub in _split(c, 12000):
            r, y = linear_rows(model, sub, w)
            if len(r):
                qr.add(r / math.sqrt(wsum), y / math.sqrt(wsum))
    x = qr.solve(rcond)
    with torch.no_grad():
        model.species_coeffs.copy_(torch.from_numpy(x[:S]))
        model.moment_coeffs.copy_(torch.from_numpy(x[S:]))
    if return_qr:
        return qr.residual2(x), qr
    return qr.residual2(x)


# ------------------------------------------------------------------------------------- fitting
def resolve_weights(weights: Any) -> Dict[str, float]:
    if weights is None or weights == "mlip":
        return dict(MLIP_WEIGHTS)
    w = {"energy": 1.0, "forces": 0.01, "virial": 0.0}
    for k, v in dict(weights).items():
        k = {"stress": "virial", "force": "forces", "e": "energy", "f": "forces", "v": "virial"}.get(k, k)
        if k not in w:
            raise ValueError(f"unknown loss weight {k!r} (energy, forces, virial)")
        w[k] = float(v)
    return w


def fit(model, frames: Sequence[Any], weights: Any = "mlip", max_iter: int = 2000, cycle_iter: int = 400,
        history: int = 100, optimizer: str = "varpro", patience: int = 30, lr: float = 1e-2, max_time: Optional[float] = None,
        max_edges: int = 20000, init_linear: bool = True, log: Callable[[str], None] = print,
        callback: Optional[Callable[[int, float], None]] = None, min_rel_improvement: float = 1e-6,
        precondition: bool = True, validation: Optional[Sequence[Any]] = None) -> Dict[str, Any]:
    """Fit `model` (an MTP) on all `frames` (full batch). Returns a history dictionary.

    `validation` (frames, varpro only): the loss on them is computed at every evaluation and the model
    returned is the one with the lowest validation loss (early stopping: a long fit keeps lowering the
    training loss while the energies of unseen structures get worse); `patience` then counts
    evaluations without a new best validation loss."""
    w = resolve_weights(weights)
    t0 = time.time()
    chunks = make_chunks(frames, model.species, model.cutoff, max_edges, model.radial_coeffs.dtype)
    val_chunks = (make_chunks(validation, model.species, model.cutoff, max_edges, model.radial_coeffs.dtype)
                  if validation else [])
    log(f"mtp_fit: {len(frames)} frames, {sum(int(c.species.shape[0]) for c in chunks)} atoms, "
        f"{sum(int(c.edge_index.shape[1]) for c in chunks)} edges in {len(chunks)} chunks; weights {w}; "
        f"{model.n_alpha} basis functions, {sum(p.numel() for p in model.parameters())} parameters")
    hist: Dict[str, Any] = {"loss": [], "time": [], "iter": []}
    it = 0
    if init_linear and optimizer == "adam":
        l0 = solve_linear(model, chunks, w)
        log(f"  linear least squares: loss {l0:.6e} ({time.time() - t0:.0f} s)")
    params = [p for p in model.parameters() if p.requires_grad]

    def out_of_time() -> bool:
        return _STOP["requested"] or (max_time is not None and time.time() - t0 > max_time)

    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
        while it < max_iter and not out_of_time():
            opt.zero_grad()
            loss, grads = loss_and_grad(model, chunks, w, params)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            it += 1
            hist["loss"].append(loss)
            hist["time"].append(time.time() - t0)
            hist["iter"].append(it)
            if it % 20 == 0:
                log(f"  adam {it}: loss {loss:.6e} ({time.time() - t0:.0f} s)")
            if callback is not None:
                callback(it, loss)
        return hist
    if optimizer == "varpro":
        # variable projection: L-BFGS over the radial coefficients only; every evaluation first solves
        # the linear coefficients exactly, so the gradient (envelope theorem) is that of the reduced loss
        theta = model.radial_coeffs
        opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, max_eval=max_iter,
                                history_size=history, tolerance_grad=0.0, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")
        state = {"n": 0, "best": math.inf, "best_theta": theta.detach().clone(), "since": 0, "best_val": math.inf}
        hist["val_loss"] = []

        def vp_closure():
            if out_of_time() or state["since"] >= patience:
                raise _OutOfTime()
            opt.zero_grad()
            solve_linear(model, chunks, w)
            loss, grads = loss_and_grad(model, chunks, w, [theta])
            theta.grad = grads[0]
            state["n"] += 1
            # selection criterion: the validation loss if there is a validation set (the training loss
            # then only drives L-BFGS), else the training loss
            crit, key = loss, "best"
            if val_chunks:
                crit, key = chunks_loss(model, val_chunks, w), "best_val"
                hist["val_loss"].append(crit)
                state["best"] = min(state["best"], loss)
            state["since"] = 0 if crit < state[key] * (1.0 - min_rel_improvement) else state["since"] + 1
            if crit < state[key]:
                state[key] = crit
                state["best_theta"] = theta.detach().clone()
                state["best_n"] = state["n"]
            hist["loss"].append(loss)
            hist["time"].append(time.time() - t0)
            hist["iter"].append(state["n"])
            if state["n"] % 5 == 0 or state["n"] == 1:
                extra = (f", validation {hist['val_loss'][-1]:.6e} (best {state['best_val']:.6e} at eval "
                         f"{state.get('best_n')})" if val_chunks else "")
                log(f"  varpro eval {state['n']}: loss {loss:.6e} (best {state['best']:.6e}{extra}, {time.time() - t0:.0f} s)")
            if callback is not None:
                callback(state["n"], loss)
            return torch.tensor(loss, dtype=torch.float64)

        try:
            opt.step(vp_closure)
        except _OutOfTime:
            pass
        with torch.no_grad():
            theta.copy_(state["best_theta"])
        ll = solve_linear(model, chunks, w)
        if val_chunks:
            hist["best_eval"] = state.get("best_n")
            log(f"  validation: best loss {state['best_val']:.6e} at evaluation {state.get('best_n')} "
                f"of {state['n']} (the model returned)")
        log(f"  varpro done after {state['n']} evaluations: loss {ll:.6e} ({time.time() - t0:.0f} s)")
        hist["loss"].append(ll)
        return hist
    if optimizer != "lbfgs":
        raise ValueError(f"optimizer must be 'varpro', 'lbfgs' or 'adam', got {optimizer!r}")
    best = math.inf
    S = model.n_species
    while it < max_iter and not out_of_time():
        # precondition: linear coefficients in whitened coordinates of the current least-squares problem
        ll, qr = solve_linear(model, chunks, w, return_qr=True)
        log(f"  linear least squares: loss {ll:.6e} ({time.time() - t0:.0f} s)")
        if precondition:
            T = torch.from_numpy(qr.whitening()).to(model.radial_coeffs.dtype)
            xi0 = torch.cat([model.species_coeffs.detach(), model.moment_coeffs.detach()])
            z = torch.linalg.lstsq(T, xi0.unsqueeze(1)).solution.squeeze(1).clone().requires_grad_(True)
            xi_perp = (xi0 - T @ z.detach()).detach()
            theta = model.radial_coeffs
            opt_params = [z, theta]

            def fn(sp, ei, vec):
                xi = T @ z + xi_perp
                return torch.func.functional_call(model, {"radial_coeffs": theta, "species_coeffs": xi[:S],
                                                          "moment_coeffs": xi[S:]}, (sp, ei, vec))
        else:
            opt_params = params
            fn = None
        opt = torch.optim.LBFGS(opt_params, lr=1.0, max_iter=cycle_iter, max_eval=int(cycle_iter * 1.25),
                                history_size=history, tolerance_grad=0.0, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")
        state = {"n": 0, "loss": math.inf}

        def closure():
            if out_of_time():
                raise _OutOfTime()
            opt.zero_grad()
            loss, grads = loss_and_grad(model, chunks, w, opt_params, fn=fn)
            for p, g in zip(opt_params, grads):
                p.grad = g
            state["n"] += 1
            state["loss"] = loss
            if state["n"] % 25 == 0:
                log(f"  lbfgs eval {it + state['n']}: loss {loss:.6e} ({time.time() - t0:.0f} s)")
            if callback is not None:
                callback(it + state["n"], loss)
            return torch.tensor(loss, dtype=torch.float64)

        snapshot = [p.detach().clone() for p in params]
        try:
            opt.step(closure)
        except _OutOfTime:
            pass
        if precondition:
            with torch.no_grad():
                xi = T @ z.detach() + xi_perp
                model.species_coeffs.copy_(xi[:S])
                model.moment_coeffs.copy_(xi[S:])
        it += max(state["n"], 1)
        loss = state["loss"]
        if not math.isfinite(loss):
            with torch.no_grad():
                for p, s_ in zip(params, snapshot):
                    p.copy_(s_)
            log("  non-finite loss: restored the previous parameters and stopped")
            break
        hist["loss"].append(loss)
        hist["time"].append(time.time() - t0)
        hist["iter"].append(it)
        log(f"  cycle end at {it} evaluations: loss {loss:.6e} ({time.time() - t0:.0f} s)")
        if loss > best * (1.0 - min_rel_improvement):
            break
        best = loss
    ll = solve_linear(model, chunks, w)
    log(f"  final linear least squares: loss {ll:.6e} ({time.time() - t0:.0f} s)")
    hist["loss"].append(ll)
    return hist


class _OutOfTime(Exception):
    pass


# ------------------------------------------------------------------------------------- evaluation
def evaluate(model, frames: Sequence[Any], max_edges: int = 20000) -> Dict[str, float]:
    """MAE / RMSE of energy per atom (meV/atom), forces (eV/Å, per component) and virial per atom (meV)."""
    chunks = make_chunks(frames, model.species, model.cutoff, max_edges, model.radial_coeffs.dtype)
    de, df, dv = [], [], []
    for c in chunks:
        e, f, v = predict_chunk(model, c, create_graph=False, need_virial=True)
        n = c.n_atoms
        m = c.e_mask
        de.append(((e.detach() - c.energy) / n)[m])
        df.append((f.detach() - c.forces)[c.f_mask].reshape(-1))
        if v is not None and bool(c.v_mask.any()):
            dv.append(((v.detach() - c.virial) / n[:, None, None])[c.v_mask].reshape(-1))
    out: Dict[str, float] = {}
    for name, arr, unit in (("energy", de, 1000.0), ("forces", df, 1.0), ("virial", dv, 1000.0)):
        if arr:
            x = torch.cat(arr).double()
            if x.numel():
                out[f"{name}_mae"] = float(x.abs().mean()) * unit
                out[f"{name}_rmse"] = float(x.pow(2).mean().sqrt()) * unit
    return out


# ------------------------------------------------------------------------------------- recipe CLI
def _read(path: str):
    from mlip.data import read_frames

    return read_frames(path)


def run_recipe(cfg: Dict[str, Any], out_dir: str, log: Callable[[str], None] = print) -> Dict[str, Any]:
    from mlip.export import export_model
    from mlip.models.mtp import MTP

    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    data = cfg["data"]
    train = _read(data["train"])
    test = _read(data["test"]) if data.get("test") else []
    # early-stopping set: data.validation (a file) or data.validation_fraction of the training frames
    val: List[Any] = _read(data["validation"]) if data.get("validation") else []
    frac = float(data.get("validation_fraction", 0.0) or 0.0)
    if not val and frac > 0.0:
        if not 0.0 < frac < 0.5:
            raise ValueError(f"data.validation_fraction must be in (0, 0.5), got {frac}")
        perm = np.random.default_rng(int(data.get("split_seed", 0))).permutation(len(train))
        n_val = max(1, int(round(frac * len(train))))
        val = [train[k] for k in sorted(perm[:n_val])]
        train = [train[k] for k in sorted(perm[n_val:])]
    mcfg = dict(cfg["model"])
    mcfg.pop("family", None)
    if not mcfg.get("species"):
        mcfg["species"] = sorted({s for f in train for s in f.symbols})
    from_file = mcfg.pop("from_file", None)
    model = MTP.from_file(from_file, **mcfg) if from_file else MTP(**mcfg)
    model = model.double()
    stats = model.fit_statistics(train)
    log(f"model: level {model.level}, cutoff {model.cutoff}, min_dist {float(model.rb_min):.3f}, "
        f"scaling {float(model.rb_scaling):.5g} ({stats}), {model.n_alpha} basis functions")
    fcfg = dict(cfg.get("fit", {}))
    weights = resolve_weights(cfg.get("loss", "mlip"))
    t0 = time.time()
    best_path = os.path.join(out_dir, "model.pt")

    last = {"t": time.time(), "best": math.inf}
    every = float(cfg.get("checkpoint_every", 600))

    def save(tag: str) -> None:
        """model.mtp (own code, always) and model.pt (the export; a failure there is logged, not fatal:
        `mlip convert model.mtp -o model.pt` recreates it)."""
        model.to_mtp_file(os.path.join(out_dir, "model.mtp"))
        torch.save({"config": model.config(), "state_dict": model.state_dict()}, os.path.join(out_dir, "model_state.pth"))
        try:
            export_model(model, best_path, dtype="float64")
        except Exception as exc:  # noqa: BLE001 - keep training whatever happens to the export code
            log(f"  {tag}: export failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"model.mtp and model_state.pth were written")

    def checkpoint(n: int, loss: float) -> None:
        if loss < last["best"]:
            last["best"] = loss
            if time.time() - last["t"] > every:
                last["t"] = time.time()
                save("checkpoint")
                log(f"  checkpoint: {out_dir} (loss {loss:.6e} at evaluation {n})")

    if val:
        log(f"validation: {len(val)} frames held out of the fit (early stopping), {len(train)} fitted")
    hist = fit(model, train, weights=weights, log=log, callback=checkpoint, validation=val or None, **fcfg)
    train_time = time.time() - t0
    save("final")
    metrics = {"train": evaluate(model, train), "test": evaluate(model, test) if test else {},
               "validation": evaluate(model, val) if val else {}, "best_eval": hist.get("best_eval"),
               "n_train_frames": len(train), "n_validation_frames": len(val),
               "train_time_s": train_time, "level": model.level, "n_basis": model.n_alpha,
               "n_params": int(sum(p.numel() for p in model.parameters())), "cutoff": model.cutoff,
               "weights": weights, "final_loss": hist["loss"][-1] if hist["loss"] else None}
    with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=1)
    log(json.dumps(metrics, indent=1))
    return metrics


def main(argv: Optional[List[str]] = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(prog="python -m mlip.train.mtp_fit", description=__doc__.split("\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("--out", default=None)
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--max-time", type=float, default=None)
    ap.add_argument("--level", type=int, default=None, help="override model.level")
    args = ap.parse_args(argv)
    with open(args.recipe) as fh:
        cfg = yaml.safe_load(fh)
    fit_cfg = cfg.setdefault("fit", {})
    if args.max_iter is not None:
        fit_cfg["max_iter"] = args.max_iter
    if args.max_time is not None:
        fit_cfg["max_time"] = args.max_time
    if args.level is not None:
        cfg["model"]["level"] = args.level
    base = os.path.dirname(os.path.abspath(args.recipe))
    for key in ("train", "test", "validation"):  # relative data paths are relative to the recipe file
        p = cfg.get("data", {}).get(key)
        if p and not os.path.isabs(p):
            cfg["data"][key] = os.path.normpath(os.path.join(base, p))
    mf = cfg.get("model", {}).get("from_file")
    if mf and not os.path.isabs(mf):
        cfg["model"]["from_file"] = os.path.normpath(os.path.join(base, mf))
    out = args.out or cfg.get("output", {}).get("dir") or "runs/" + os.path.splitext(os.path.basename(args.recipe))[0]

    def log(msg: str) -> None:
        print(msg, flush=True)

    import signal

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    run_recipe(cfg, out, log)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
