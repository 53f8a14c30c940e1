"""An explicit, learned two-body energy beside the message-passing network (`model.pair_basis > 0`).

Why: on mlearn Mo the NequIP-style model fits the hot AIMD frames' close contacts (nearest neighbour
< 2.45 Å) as well as a 549-parameter MTP does, yet predicts the test set's close contacts worse
(`benchmarks/force_errors_by_contact.py`). The steep short-range repulsion is mostly pairwise; a
low-capacity, linear pair term can carry it smoothly, so that the network only has to learn a smooth
many-body residual (the role of GAP's 2-body baseline, or of the scalar moments of an MTP).

    E_i^pair = ½ Σ_{j ∈ N(i)} Σ_k c_{t_i t_j k} T_k(x_ij) u(r_ij / r_c),
    x = (2 r − r_c − r_min) / (r_c − r_min)

with T_k Chebyshev polynomials of the first kind (k = 0..pair_basis−1), u the model's polynomial
envelope (zero with two derivatives at r_c), and c symmetric in the species pair (c_ab = c_ba, stored
once per unordered pair), initialised to zero so that a new model starts as the network alone. Each
edge i→j of a full neighbour list gives half, its reverse the other half; on a LAMMPS one-cutoff graph
the ghost's owner holds the reverse edge, so every pair's energy is counted exactly once in total.
The energy is linear in c (like the readout) and needs only the edge lengths: no exchange.
"""
from typing import List

import torch
from torch import Tensor, nn

from mlip.models.nequip.radial import polynomial_envelope


def pair_slots(n_species: int) -> Tensor:
    """[n_species, n_species] -> row of the unordered pair (a, b) in the coefficient table."""
    idx = torch.zeros(n_species, n_species, dtype=torch.long)
    k = 0
    for a in range(n_species):
        for b in range(a, n_species):
            idx[a, b] = k
            idx[b, a] = k
            k += 1
    return idx


class PairTerm(nn.Module):
    """Edges -> per-centre pair energies (see module docstring). With num_basis 0 it holds no
    parameter (old checkpoints load unchanged) and `enabled` is False."""

    enabled: bool

    def __init__(self, n_species: int, cutoff: float, num_basis: int, r_min: float, p: int) -> None:
        super().__init__()
        if num_basis < 0:
            raise ValueError(f"pair_basis must be >= 0, got {num_basis}")
        if not 0.0 <= r_min < cutoff:
            raise ValueError(f"pair_r_min must be in [0, cutoff = {cutoff}), got {r_min}")
        self.enabled = num_basis > 0
        self.num_basis = int(num_basis)
        self.cutoff = float(cutoff)
        self.r_min = float(r_min)
        self.p = float(p)
        n_pairs = n_species * (n_species + 1) // 2
        self.register_buffer("slot", pair_slots(n_species), persistent=False)
        if self.enabled:
            self.coeff = nn.Parameter(torch.zeros(n_pairs, self.num_basis))
        else:
            self.register_buffer("coeff", torch.zeros(n_pairs, 0), persistent=False)

    def basis(self, r: Tensor) -> Tensor:
        """r [E] -> T_k(x) u(r/r_c) [E, num_basis] (zero at and beyond r_c)."""
        x = (2.0 * r - self.cutoff - self.r_min) / (self.cutoff - self.r_min)
        terms: List[Tensor] = [torch.ones_like(x)]
        if self.num_basis > 1:
            terms.append(x)
        for _ in range(2, self.num_basis):
            terms.append(2.0 * x * terms[-1] - terms[-2])
        t = torch.stack(terms[: self.num_basis], dim=1)
        return t * polynomial_envelope(r, self.cutoff, self.p).unsqueeze(1)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centres: int) -> Tensor:
        """Pair energies [n_centres] of the first n_centres atoms from the edges centred on them
        (edges centred on other atoms are ignored)."""
        out = torch.zeros(n_centres, dtype=edge_vec.dtype, device=edge_vec.device)
        if not self.enabled:
            return out
        ei, vec = edge_index, edge_vec
        if n_centres < species.shape[0]:  # a pruned or LAMMPS graph: only edges centred on the first atoms
            keep = edge_index[0] < n_centres
            ei, vec = edge_index[:, keep], edge_vec[keep]
        r = torch.linalg.norm(vec, dim=-1)
        rows = self.slot[species.index_select(0, ei[0]), species.index_select(0, ei[1])]
        c = self.coeff.to(edge_vec.dtype).index_select(0, rows)  # [E', num_basis]
        e_edge = 0.5 * (self.basis(r) * c).sum(1)
        return out.index_add(0, ei[0], e_edge)


__all__ = ["PairTerm", "pair_slots"]
