"""The gradient of a loss of MTP predictions with respect to the radial coefficients, analytically:
the vector-Jacobian product the variable-projection fit (`mlip.train.varpro`) needs at every
evaluation, without the double backward pass of autograd through the whole edge graph.

Given cotangents gE [n_frames] (∂L/∂energy), gF [N, 3] (∂L/∂forces) and gW [n_frames, 3, 3] (∂L/∂virial),
with b_e the per-edge basic moments, Mb_i = Σ_{e∈i} b_e, G_i = ∂E_i/∂Mb_i, H_i = ∂²E_i/∂Mb_i², and
d_e = ∂b_e/∂r_e, the forces and virials only see g_e = ∂E/∂r_e = d_eᵀ G_i, so

    ρ_e = gF_i − gF_j − r_eᵀ gW_f                        (F_i += g_e, F_j −= g_e, W = −Σ r_e ⊗ g_e)
    P_i = Σ_{e∈i} d_e ρ_e                                 (the tangent of Mb_i along ρ)
    ∂L/∂c = Σ_i (gE_f G_i + H_i P_i)ᵀ ∂Mb_i/∂c + Σ_e G_iᵀ ∂(d_e ρ_e)/∂c.

H_i P_i is one double backward through the per-atom contraction (atoms, not edges); everything per
edge is a handful of [E, n_basic] products. b and d are linear in c through f_μ = Σ_k c_μk Q_k and
f'_μ = Σ_k c_μk Q'_k, so the per-edge sums reduce to [E, n_mu] ⊗ [E, n_rb] outer products.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mlip.models.mtp_linear import _mono_plan, monomials, radial_basis, radial_functions


def _expand(model, per_mu: Tensor, per_mono: Tensor) -> Tensor:
    """[E, n_mu] × [E, n_mono] -> [E, n_basic]: per_mu[μ(n)] · per_mono[mono(n)] for basic moment n."""
    if model.fast_basic:
        return torch.cat([per_mu[:, m:m + 1] * per_mono[:, :cnt] for m, cnt in enumerate(model.basic_blocks)], 1)
    return per_mu.index_select(1, model.basic_mu) * per_mono.index_select(1, model.basic_mono)


def radial_coeffs_vjp(model, species: Tensor, edge_index: Tensor, edge_vec: Tensor, node_frame: Tensor,
                      edge_frame: Tensor, gE: Tensor, gF: Tensor, gW: Optional[Tensor]) -> Tensor:
    """∂L/∂radial_coeffs [S, S, n_mu, n_rb] for the cotangents gE [n_frames], gF [N, 3] and gW
    [n_frames, 3, 3] (or None: no virial term) of the predictions at the model's current parameters."""
    dtype = edge_vec.dtype
    S, n_mu, n_rb, nb = model.n_species, model.n_mu, model.radial_basis_size, model.n_basic
    N = int(species.shape[0])
    vec = edge_vec.detach()
    i, j = edge_index[0], edge_index[1]
    with torch.no_grad():
        r = torch.linalg.norm(vec, dim=1)
        q, dq = radial_basis(model, r)  # [E, n_rb]
        f, fp = radial_functions(model, species, edge_index, q, dq)  # [E, n_mu]
        u = vec / r.unsqueeze(1)
        mono = monomials(model, u)  # [E, n_mono]
        rho = gF[i] - gF[j]  # [E, 3]
        if gW is not None:
            rho = rho - torch.bmm(vec.unsqueeze(1), gW[edge_frame]).squeeze(1)
        rho_u = (rho * u).sum(1, keepdim=True)  # [E, 1]
        plan = _mono_plan(model)
        low, coef, nuv = plan["low"], plan["coef"].to(dtype), plan["nu"].to(dtype)
        rho_grad = sum(rho[:, ax:ax + 1] * coef[:, ax] * mono.index_select(1, low[:, ax]) for ax in range(3))
        rho_dmono = (rho_grad - rho_u * nuv * mono) / r.unsqueeze(1)  # ρ·∂m/∂r_e, [E, n_mono]
        mb = torch.zeros(N, nb, dtype=dtype).index_add_(0, i, _expand(model, f, mono))
        P = torch.zeros(N, nb, dtype=dtype).index_add_(
            0, i, _expand(model, fp, mono * rho_u) + _expand(model, f, rho_dmono))  # [N, nb]
    # G = ∂E_i/∂Mb_i and H P: reverse, then forward-over-reverse, through the per-atom contraction
    xi = model.moment_coeffs.detach().to(dtype)
    G = torch.zeros(N, nb, dtype=dtype)
    K = torch.zeros(N, nb, dtype=dtype)
    chunk = 4096
    for a0 in range(0, N, chunk):
        x = mb[a0:a0 + chunk].clone().requires_grad_(True)
        with torch.enable_grad():
            e = (model.contract(x).index_select(1, model.mapping) @ xi).sum()
            (g,) = torch.autograd.grad(e, x, create_graph=True)
            if g.requires_grad:
                (hp,) = torch.autograd.grad((g * P[a0:a0 + chunk]).sum(), x, allow_unused=True)
                if hp is not None:
                    K[a0:a0 + chunk] = hp
        G[a0:a0 + chunk] = g.detach()
    with torch.no_grad():
        K += gE[node_frame].unsqueeze(1) * G
        sel = torch.nn.functional.one_hot(model.basic_mu, n_mu).to(dtype)  # [nb, n_mu]
        Gi, Ki = G.index_select(0, i), K.index_select(0, i)  # [E, nb]
        ones = torch.ones(mono.shape[0], n_mu, dtype=dtype)
        mono_b = _expand(model, ones, mono)
        with_q = (Ki * mono_b + Gi * _expand(model, ones, rho_dmono)) @ sel  # [E, n_mu], times Q_k
        with_dq = ((Gi * mono_b) @ sel) * rho_u  # [E, n_mu], times Q'_k
        if S == 1:
            grad = (with_q.T @ q + with_dq.T @ dq).reshape(1, 1, n_mu, n_rb)
        else:
            per_edge = with_q.unsqueeze(2) * q.unsqueeze(1) + with_dq.unsqueeze(2) * dq.unsqueeze(1)
            grad = torch.zeros(S * S, n_mu * n_rb, dtype=dtype).index_add_(
                0, species[i] * S + species[j], per_edge.reshape(-1, n_mu * n_rb)).reshape(S, S, n_mu, n_rb)
    return grad.to(model.radial_coeffs.dtype)
