"""The equivariant convolution of the NequIP model, as batched GEMMs over a per-centre edge layout.

out_i = Σ_j w(r_ij) ⊙ (x_j ⊗ Y(r̂_ij)) over "uvu" (channel-wise) paths l1 ⊗ l2 → l3. A generic
implementation builds one message tensor per edge and scatters it onto the centres; here the edges
are laid out per centre atom instead ("slots", padded to the largest neighbour count n_max), so
that the neighbour sum and the Clebsch-Gordan contraction of a path are one batched GEMM, and no
per-edge message tensor or scatter is ever needed. This file holds the three pieces of that scheme:

* `edge_slots`, `slot_vectors`, `slot_senders`: the padded per-centre layout of the edges
  (slot s = (centre i, k-th neighbour));
* `CGBank` / `coupling_tensors`: the Wigner 3j matrices of all paths with l1, l2 > 0, and
  T = Y_l2 · C evaluated once per forward and shared by all layers;
* `EdgeConvolution`: the convolution itself, on those tensors.
Wigner 3j symbols come from e3nn's public API.
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from e3nn import o3


def edge_slots(n_nodes: int, edge_index: Tensor) -> Tuple[Tensor, int]:
    """Per-centre padded edge layout: slot_edge [n_nodes n_max] = edge of slot (i, s), or E
    (padding), and n_max, the largest neighbour count. Edges of centres >= n_nodes are not allowed."""
    n_edges = edge_index.shape[1]
    dst = edge_index[0]
    if n_edges == 0 or n_nodes == 0:
        return torch.zeros(0, dtype=torch.long, device=dst.device), 0
    counts = torch.bincount(dst, minlength=n_nodes)
    n_max = int(counts.max())
    if bool((dst[1:] >= dst[:-1]).all()):  # the neighbour lists give edges sorted by centre
        order = torch.arange(n_edges, device=dst.device)
        dst_sorted = dst
    else:
        dst_sorted, order = torch.sort(dst, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_edges, device=dst.device) - starts.index_select(0, dst_sorted)
    slot_edge = torch.full((n_nodes * n_max,), n_edges, dtype=torch.long, device=dst.device)
    slot_edge = slot_edge.index_put((dst_sorted * n_max + slot,), order)
    return slot_edge, n_max


def slot_vectors(edge_vec: Tensor, slot_edge: Tensor, cutoff: float) -> Tensor:
    """Edge vectors in slot order [S, 3]. Padding slots get a vector beyond the cutoff (zero radial
    weights, finite harmonics), so they contribute exactly nothing.

    Returned alone, not in a tuple with the senders: TorchScript's alias analysis treats a tensor
    that went through a tuple as possibly aliased and then skips common-subexpression elimination
    in the spherical harmonics of it, which changes the round-off of exported forces."""
    pad_vec = torch.zeros((1, 3), dtype=edge_vec.dtype, device=edge_vec.device)
    pad_vec[0, 0] = 2.0 * cutoff + 1.0
    return torch.cat([edge_vec, pad_vec], 0).index_select(0, slot_edge)


def slot_senders(edge_index: Tensor, slot_edge: Tensor) -> Tensor:
    """Sending atom of every slot [S]; atom 0 for padding slots (their weights are zero)."""
    pad_src = torch.zeros(1, dtype=torch.long, device=edge_index.device)
    return torch.cat([edge_index[1], pad_src]).index_select(0, slot_edge)


class CGBank:
    """Construction-time registry of the coupling matrices C_(l1,l2,l3) (l1, l2 > 0) used by the
    blocks; the model evaluates T = Y_l2 @ C once per forward for every entry and shares them."""

    def __init__(self) -> None:
        self.keys: List[Tuple[int, int, int]] = []

    def index(self, l1: int, l2: int, l3: int) -> int:
        if (l1, l2, l3) not in self.keys:
            self.keys.append((l1, l2, l3))
        return self.keys.index((l1, l2, l3))

    def matrices(self) -> Tuple[Tensor, List[Tuple[int, int, int, int]]]:
        """One float64 buffer [2 l_max + 1, Σ d1 d3] (rows padded) and (sh irrep index l2, row count
        d2, column start, column count) per entry. C[m2, (i1, k3)] = w3j(l1, l2, l3)[i1, m2, k3] sqrt(2 l3 + 1)."""
        cols = []
        meta: List[Tuple[int, int, int, int]] = []
        rows = max([2 * l2 + 1 for _, l2, _ in self.keys] + [1])
        c0 = 0
        for l1, l2, l3 in self.keys:
            w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1)
            c = w3j.permute(1, 0, 2).reshape(2 * l2 + 1, (2 * l1 + 1) * (2 * l3 + 1))
            cols.append(torch.nn.functional.pad(c, (0, 0, 0, rows - c.shape[0])))
            meta.append((l2, 2 * l2 + 1, c0, c.shape[1]))
            c0 += c.shape[1]
        bank = torch.cat(cols, dim=1) if cols else torch.zeros(rows, 0, dtype=torch.float64)
        return bank, meta


def coupling_tensors(sh: List[Tensor], cg_bank: Tensor, cg_meta: List[Tuple[int, int, int, int]], n_t: int) -> List[Tensor]:
    """T = Y_l2 @ C for every CG bank entry: [min(n_t, S), d1 d3] each, from sh Y_l [S, 2l+1].

    Only the first n_t slots are needed: T serves the l1 > 0 paths, i.e. blocks 1.. (block 0 sees
    scalars only), and with pruning those blocks update a prefix of the centres."""
    t_list: List[Tensor] = []
    for l2, d2, c0, nc in cg_meta:
        y = sh[l2][:n_t] if n_t < sh[l2].shape[0] else sh[l2]
        t_list.append(torch.matmul(y, cg_bank[:d2, c0 : c0 + nc]))
    return t_list


class EdgeConvolution(nn.Module):
    """The equivariant convolution out_i = Σ_j w(r_ij) ⊙ (x_j ⊗ Y(r̂_ij)), "uvu" (channel-wise) paths.

    Edges are laid out per centre atom, padded to the graph's largest neighbour count n_max
    ("slots"; padding slots have zero weights). For a path l1 ⊗ l2 → l3 of an input block
    (multiplicity u, d1 = 2 l1 + 1):
        out_p[i, k, u] = Σ_{s ∈ slots(i)} Σ_a T_p[s, a, k] (w_p[s, u] x_{j(s)}[a, u]),
        T_p[s, a, k] = Σ_m C_p[a, m, k] Y_l2[s, m]   (C = Wigner 3j · sqrt(2 l3 + 1), e3nn's
        "component" normalisation; T is computed once per forward and shared by the blocks).
    The sum over neighbours *and* the contraction over a is one batched GEMM per path
    ([d3, n_max d1] @ [n_max d1, u] per atom). Paths with l2 = 0 (C = identity) are a plain sum
    over slots, paths with l1 = 0 a GEMM against Y. Output: [n_nodes, irreps_mid.dim] in the flat
    e3nn layout of `irreps_mid` (one (u, 2 l3 + 1) block per path, paths in input-block order).
    """

    in_blocks: List[Tuple[int, int, int]]  # (x start, u, d1)
    # (input block, sh irrep index, d3, cg bank index, kind, weight index); kind 0: l2 = 0, 1: l1 = 0, 2: general
    paths: List[Tuple[int, int, int, int, int, int]]

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_target: o3.Irreps, bank: CGBank) -> None:
        super().__init__()
        mid = []
        blocks: List[Tuple[int, int, int]] = []
        paths: List[Tuple[int, int, int, int, int, int]] = []
        muls = set()
        x_off = 0
        for mul, ir1 in irreps_in:
            muls.add(mul)
            b = len(blocks)
            used = False
            for i2, (m2, ir2) in enumerate(irreps_sh):
                assert m2 == 1 and ir2.l == i2
                for ir3 in ir1 * ir2:
                    if ir3 not in irreps_target:
                        continue
                    used = True
                    if ir2.l == 0:
                        kind, ci = 0, -1
                    elif ir1.l == 0:
                        kind, ci = 1, -1
                    else:
                        kind, ci = 2, bank.index(ir1.l, ir2.l, ir3.l)
                    paths.append((b, i2, ir3.dim, ci, kind, len(mid)))
                    mid.append((mul, ir3))
            if used:
                blocks.append((x_off, mul, ir1.dim))
            x_off += mul * ir1.dim
        if len(muls) > 1:
            raise ValueError(f"all input irreps need the same multiplicity, got {irreps_in}")
        self.u = muls.pop() if muls else 0
        self.in_blocks = blocks
        self.paths = paths
        self.n_paths = len(paths)
        self.irreps_mid = o3.Irreps(mid)
        self.weight_numel = self.u * self.n_paths

    def forward(
        self, x: Tensor, sh_parts: List[Tensor], t_list: List[Tensor], ws: List[Tensor], slot_src: Tensor,
        n_nodes: int, n_max: int,
    ) -> Tensor:
        """x [N_in, irreps_in.dim] (senders); sh_parts Y_l [S, 2l+1]; t_list T [S, d1 d3] of the CG bank;
        ws [S, u] weights per path; slot_src [S] sending atom of every slot, S = n_nodes n_max for
        the first n_nodes <= N_in atoms (the centres). Returns [n_nodes, irreps_mid.dim]."""
        n_in = x.shape[0]
        u = self.u
        n_slots = slot_src.shape[0]
        xs: List[Tensor] = []
        for x0, mul, d1 in self.in_blocks:
            xb = x[:, x0 : x0 + mul * d1].reshape(n_in, mul, d1).transpose(1, 2).reshape(n_in, d1 * mul)
            xs.append(xb.index_select(0, slot_src).reshape(n_slots, d1, mul))  # [S, d1, u]
        outs: List[Tensor] = []
        for b, i2, d3, ci, kind, p in self.paths:
            xw = xs[b] * ws[p].unsqueeze(1)  # [S, d1, u]
            d1 = xw.shape[1]
            if kind == 0:  # Y_0 = 1, C = identity
                o = xw.reshape(n_nodes, n_max, d1, u).sum(1)
            elif kind == 1:  # scalar input, C = identity: Σ_s Y[s, k] (w x)[s, u]
                y = sh_parts[i2].reshape(n_nodes, n_max, d3).transpose(1, 2)
                o = torch.bmm(y, xw.reshape(n_nodes, n_max, u))
            else:
                t = t_list[ci].reshape(n_nodes, n_max * d1, d3).transpose(1, 2)
                o = torch.bmm(t, xw.reshape(n_nodes, n_max * d1, u))
            outs.append(o.transpose(1, 2).reshape(n_nodes, u * d3))  # -> e3nn (u, m) layout
        return torch.cat(outs, dim=1)


__all__ = ["CGBank", "EdgeConvolution", "coupling_tensors", "edge_slots", "slot_senders", "slot_vectors"]
