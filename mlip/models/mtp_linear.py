"""The MTP as a linear model: design rows for an exact least-squares solve of its linear parameters.

For fixed radial coefficients the MTP energy E = Σ_i (species_coeffs[t_i] + Σ_α ξ_α B_α(i)) is linear
in ξ = (species_coeffs, moment_coeffs), and so are its forces and virials. `linear_design` returns the
per-frame energy rows [species counts, Σ_i B(i)], the per-atom force rows and the per-frame virial rows
of that linear map, which is all a family-agnostic solver (`mlip.train.full_batch.solve_linear`) needs.

The force/virial rows come from ∂ΣB/∂r_e without one backward pass per basis function: r_e only enters
its centre's basic moments, so g_e = J_i · d_e with J_i = ∂B(i)/∂Mb(i) (sparse forward mode through
alpha_index_times, `contract_jacobian`) and d_e = ∂b_e/∂r_e (analytic, `edge_basic_and_gradient`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from mlip.models.mtp_basis import multisets

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


def _plan(model) -> _SparseTangent:
    key = id(model)
    if key not in _PLANS or _PLANS[key][0] is not model:
        _PLANS[key] = (model, _SparseTangent(model))
    return _PLANS[key][1]


def _contract_t(model, mbT: Tensor) -> Tensor:
    """`model.contract` in moment-major layout: [n_basic, n] -> [n_moments, n] (row gathers)."""
    M = torch.cat([mbT, torch.zeros(model.n_moments - model.n_basic, mbT.shape[1], dtype=mbT.dtype)])
    tm = model.times_m.to(mbT.dtype).unsqueeze(1)
    for g in range(len(model.gen_offsets) - 1):
        s, e = model.gen_offsets[g], model.gen_offsets[g + 1]
        M.index_add_(0, model.times_c[s:e],
                     tm[s:e] * M.index_select(0, model.times_a[s:e]) * M.index_select(0, model.times_b[s:e]))
    return M


def contract_jacobian(model, mb: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """∂B(i)/∂Mb(i) for each row of mb [n, n_basic] -> [n, A, n_basic] (sparse forward mode through
    alpha_index_times; rows of one generation only read complete moments). Computed moment-major
    ([entries, n]: contiguous row gathers, ~25% faster than column gathers). `out`: a buffer [≥n,
    A·n_basic] from an earlier call with the same model, whose structural zeros are still zero (only
    the nonzero pattern, the same for every atom, is written: ~6% of J at level 22)."""
    plan = _plan(model)
    n, nb = mb.shape
    M = _contract_t(model, mb.T.contiguous())  # [n_moments, n]
    T = torch.zeros(plan.n_entries, n, dtype=mb.dtype)
    T[plan.init] = 1.0
    for src, mul, dst, coef in plan.gens:
        T.index_add_(0, dst, T.index_select(0, src) * M.index_select(0, mul) * coef.to(mb.dtype).unsqueeze(1))
    J = torch.zeros(n, model.n_alpha * nb, dtype=mb.dtype) if out is None else out[:n]
    J[:, plan.out_a * nb + plan.out_k] = T.index_select(0, plan.out_e).T
    return J.view(n, model.n_alpha, nb)


_MONO_PLANS: Dict[int, Tuple[Any, Dict[str, Tensor]]] = {}


def _mono_plan(model) -> Dict[str, Tensor]:
    key = id(model)
    if key in _MONO_PLANS and _MONO_PLANS[key][0] is model:
        return _MONO_PLANS[key][1]
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


def radial_basis(model, r: Tensor) -> Tuple[Tensor, Tensor]:
    """Q_k(r) = scaling · T_k(ξ) · (r_cut − r)² (0 beyond the cutoff) and dQ_k/dr, [E, n_rb] each."""
    inside = (r < model.cutoff).to(r.dtype)
    rmin, rmax, sc = float(model.rb_min), model.cutoff, float(model.rb_scaling)
    ksi = (2.0 * r - (rmin + rmax)) / (rmax - rmin)
    dksi = 2.0 / (rmax - rmin)
    T = [torch.ones_like(r), ksi]
    dT = [torch.zeros_like(r), torch.ones_like(r)]
    for k in range(2, model.radial_basis_size):
        T.append(2.0 * ksi * T[k - 1] - T[k - 2])
        dT.append(2.0 * T[k - 1] + 2.0 * ksi * dT[k - 1] - dT[k - 2])
    Tm = torch.stack(T[: model.radial_basis_size], 1)
    dTm = torch.stack(dT[: model.radial_basis_size], 1)
    env = (rmax - r) * inside
    return sc * Tm * (env * env).unsqueeze(1), sc * (dTm * dksi * (env * env).unsqueeze(1) - 2.0 * Tm * env.unsqueeze(1))


def radial_functions(model, species: Tensor, edge_index: Tensor, q: Tensor, dq: Tensor) -> Tuple[Tensor, Tensor]:
    """f_μ(r_e) and f'_μ(r_e), [E, n_mu] each, with each edge's (centre, neighbour) species coefficients."""
    C = model.radial_coeffs.detach().to(q.dtype)
    S = model.n_species
    if S == 1:
        return q @ C[0, 0].T, dq @ C[0, 0].T
    c = C.reshape(S * S, model.n_mu, model.radial_basis_size)[species[edge_index[0]] * S + species[edge_index[1]]]
    return (c * q.unsqueeze(1)).sum(2), (c * dq.unsqueeze(1)).sum(2)


def monomials(model, u: Tensor) -> Tensor:
    """x^a y^b z^c of unit vectors u [E, 3], all degrees ≤ max_nu, degree-major in MLIP's order: [E, n_mono]."""
    prev = torch.ones_like(u[:, :1])
    monos = [prev]
    for nu in range(1, model.max_nu + 1):
        prev = torch.cat([prev * u[:, 0:1], prev[:, prev.shape[1] - nu:] * u[:, 1:2],
                          prev[:, prev.shape[1] - 1:] * u[:, 2:3]], 1)
        monos.append(prev)
    return torch.cat(monos, 1)


def edge_basic_and_gradient(model, species: Tensor, edge_index: Tensor, vec: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-edge basic-moment contributions b_e [E, nb] (= model.edge_basic) and ∂b_e/∂r_e as [E, 3, nb],
    analytically: b = f_μ(r) m(u), ∂b/∂r = f'_μ(r) m u + f_μ (∇_u m − ν m u) / r."""
    dtype = vec.dtype
    r = torch.linalg.norm(vec, dim=1)
    q, dq = radial_basis(model, r)
    f, fp = radial_functions(model, species, edge_index, q, dq)
    u = vec / r.unsqueeze(1)
    mono = monomials(model, u)  # [E, n_mono]
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
        i, j = edge_index[0], edge_index[1]
        if E > 1 and bool((i[1:] < i[:-1]).any()):
            order = torch.argsort(i, stable=True)
            i, j, vec = i[order], j[order], vec[order]
        deg = torch.bincount(i, minlength=N)
        start = torch.cumsum(deg, 0) - deg
        pos = torch.arange(E) - start[i]
        B = torch.zeros(N, A, dtype=dtype)
        Fd = torch.zeros(N + 1, 3 * A, dtype=dtype)  # [atom, (xyz, α)]; last row: padding sink
        Vd = torch.zeros(n_frames, 9, A, dtype=dtype) if need_virial else None
        if atom_chunk is None:
            atom_chunk = max(8, int(2e7 // max(1, nb * (model.n_moments + A))))
        J_buf = torch.zeros(min(N, atom_chunk), A * nb, dtype=dtype)  # structural zeros stay zero
        # atom chunks: each one's edges are contiguous, so its edge terms are computed right there
        # (a few MB, cache-resident) instead of one [E, 3, n_basic] array for the whole batch
        for a0 in range(0, N, atom_chunk):
            a1 = min(N, a0 + atom_chunk)
            n = a1 - a0
            e0, e1 = int(start[a0]), int(start[a1 - 1] + deg[a1 - 1])
            ic = i[e0:e1] - a0
            basic, d = edge_basic_and_gradient(model, species, torch.stack([i[e0:e1], j[e0:e1]]), vec[e0:e1])
            mb = torch.zeros(n, nb, dtype=dtype).index_add_(0, ic, basic)  # [n, nb]
            B[a0:a1] = model.contract(mb).index_select(1, model.mapping)
            Jt = contract_jacobian(model, mb, J_buf).transpose(1, 2)  # [n, nb, A]
            if need_virial:
                # H_i[(a,b), n] = Σ_{e∈i} r_e,a d_e[b, n]
                H = torch.zeros(n, 9 * nb, dtype=dtype).index_add_(
                    0, ic, (vec[e0:e1].view(-1, 3, 1, 1) * d.unsqueeze(1)).reshape(-1, 9 * nb))
                Vd.index_add_(0, node_frame[a0:a1], -torch.bmm(H.view(n, 9, nb), Jt))
            if e1 <= e0:
                continue
            pp = pos[e0:e1]
            dmax = int(pp.max()) + 1
            flat = ic * dmax + pp
            D = torch.zeros(n * dmax, 3 * nb, dtype=dtype)
            D.index_copy_(0, flat, d.reshape(-1, 3 * nb))
            G = torch.bmm(D.view(n, dmax * 3, nb), Jt)  # [n, dmax*3, A]: g_e per (atom, slot, xyz)
            Fd[a0:a1] += G.view(n, dmax, 3 * A).sum(1)
            target = torch.full((n * dmax,), N, dtype=torch.long)
            target[flat] = j[e0:e1]
            Fd.index_add_(0, target, G.view(n * dmax, 3 * A), alpha=-1.0)
        Fd = Fd[:N].view(N, 3, A)
        if need_virial:
            Vd = Vd.view(n_frames, 3, 3, A)
    return B, Fd, Vd



def linear_design(model, species: Tensor, edge_index: Tensor, edge_vec: Tensor, node_frame: Tensor,
                  n_frames: int, need_virial: bool = False) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The model's energies, forces and virials as linear maps of ξ = (species_coeffs, moment_coeffs):
    (E [n_frames, P], F [N, 3, P], V [n_frames, 3, 3, P] or None), P = n_species + n_alpha, so that
    energy = E @ ξ, forces = F @ ξ, virial = V @ ξ for the current radial coefficients."""
    S = model.n_species
    B, Fd, Vd = basis_design(model, species, edge_index, edge_vec, node_frame, n_frames, need_virial)
    dtype = B.dtype
    N, A = B.shape
    counts = torch.zeros(n_frames, S, dtype=dtype).index_put_(
        (node_frame, species), torch.ones(N, dtype=dtype), accumulate=True)
    E = torch.cat([counts, torch.zeros(n_frames, A, dtype=dtype).index_add_(0, node_frame, B)], 1)
    F = torch.cat([torch.zeros(N, 3, S, dtype=dtype), Fd], 2)
    V = None if Vd is None else torch.cat([torch.zeros(n_frames, 3, 3, S, dtype=dtype), Vd], 3)
    return E, F, V
