"""Normalised nonlinearities of the NequIP model: the second-moment constant and the gate.

Every activation f is multiplied by 1/sqrt(E[f(z)^2]), z ~ N(0, 1), so that unit-variance inputs
give unit-variance outputs through any depth (e3nn's normalisation convention). The constant is
computed by Gauss-Hermite quadrature, not Monte Carlo, so a model rebuilt from its config is
bit-identical.

The gate is the only nonlinearity that equivariance allows on l > 0 features: scalars pass through a
pointwise activation, each l > 0 irrep is multiplied by an (activated) scalar gate of its own.
"""
import functools
import math
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from e3nn import o3


@functools.lru_cache(maxsize=None)
def second_moment_constant(name: str) -> float:
    """1/sqrt(E[f(z)^2]) for z ~ N(0,1), f in silu | tanh | sigmoid (200-point quadrature)."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    zt = torch.tensor(z, dtype=torch.float64)
    f = {"silu": torch.nn.functional.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]
    m2 = float((w * f(zt).numpy() ** 2).sum())
    return 1.0 / math.sqrt(m2)


class Gate(nn.Module):
    """Gate nonlinearity on a flat e3nn layout [scalars | gates (0e) | gated irreps]:
    SiLU on even scalars, tanh on odd ones (tanh is odd, so parity is kept), gated irreps
    multiplied by SiLU(gate); all normalised by their second-moment constants.

    Input [n, dim_in] (dim_in = scalars.dim + n_gates + gated.dim), output [n, scalars.dim + gated.dim].
    """

    scalar_blocks: List[Tuple[int, int, bool]]  # (start, stop, odd) of every scalar block
    gated_blocks: List[Tuple[int, int, int, int]]  # (gate start, start, mul, 2l+1) of every gated block

    def __init__(self, irreps_scalars: o3.Irreps, n_gates: int, irreps_gated: o3.Irreps) -> None:
        super().__init__()
        self.n_scalar_dim = irreps_scalars.dim
        self.n_gates = n_gates
        blocks: List[Tuple[int, int, bool]] = []
        i = 0
        for mul, ir in irreps_scalars:
            blocks.append((i, i + mul, ir.p == -1))
            i += mul
        self.scalar_blocks = blocks
        gated: List[Tuple[int, int, int, int]] = []
        g = 0
        i = irreps_scalars.dim + n_gates
        for mul, ir in irreps_gated:
            gated.append((g, i, mul, ir.dim))
            g += mul
            i += mul * ir.dim
        assert g == n_gates
        self.gated_blocks = gated
        self.dim_in = i
        self.silu_cst: float = second_moment_constant("silu")
        self.tanh_cst: float = second_moment_constant("tanh")
        self.all_even: bool = not any(odd for _, _, odd in blocks)
        # gate of every column of the gated irreps [gated.dim] (not persistent: no checkpoint key)
        index = [g + k // d for g, _, mul, d in gated for k in range(mul * d)]
        self.register_buffer("gate_index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Few wide ops instead of one per irrep block: when every scalar is even, one SiLU covers
        the scalars and the gates, and one product (gates repeated over their irreps' columns by an
        index) all gated irreps. Each slice costs a zero-filled full-width tensor in the backward,
        and the force loss runs that backward twice."""
        s = self.n_scalar_dim
        if self.all_even:
            act = torch.nn.functional.silu(x[:, : s + self.n_gates]) * self.silu_cst  # [n, scalars + gates]
            if self.n_gates == 0:
                return act
            gated = x[:, s + self.n_gates :] * act[:, s:].index_select(1, self.gate_index)  # [n, gated.dim]
            return torch.cat([act[:, :s], gated], dim=1)
        outs: List[Tensor] = []
        for a, b, odd in self.scalar_blocks:
            if odd:
                outs.append(torch.tanh(x[:, a:b]) * self.tanh_cst)
            else:
                outs.append(torch.nn.functional.silu(x[:, a:b]) * self.silu_cst)
        if self.n_gates > 0:
            gates = torch.nn.functional.silu(x[:, s : s + self.n_gates]) * self.silu_cst  # [n, n_gates]
            for g, i, mul, d in self.gated_blocks:
                v = x[:, i : i + mul * d].reshape(-1, mul, d) * gates[:, g : g + mul].unsqueeze(-1)
                outs.append(v.reshape(-1, mul * d))
        return torch.cat(outs, dim=1)


__all__ = ["Gate", "second_moment_constant"]
