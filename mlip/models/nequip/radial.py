"""Radial part of the NequIP model: Bessel basis, polynomial cutoff envelope, radial MLP.

Each edge's length r becomes `num_basis` features sqrt(2/rc) sin(f_n r/rc)/r (f_n = nπ at start,
optionally trainable) times the envelope u(r/rc) of order p, which is zero with two continuous
derivatives at rc. Edges at or beyond rc therefore contribute exactly nothing, and energies and
forces are smooth when atoms cross the cutoff. A bias-free MLP maps these features to the per-path
weights of the convolution; without biases its output vanishes where the (enveloped) input does.
"""
import math
from typing import List

import torch
from torch import Tensor, nn

from mlip.models.nequip.activations import second_moment_constant


def polynomial_envelope(r: Tensor, cutoff: float, p: float) -> Tensor:
    """Polynomial envelope of order p in d = r/rc: 1 at d = 0, zero with two derivatives at
    d = 1, exactly zero beyond."""
    d = r / cutoff
    dp = torch.pow(d, p)
    u = 1.0 - 0.5 * (p + 1.0) * (p + 2.0) * dp + p * (p + 2.0) * dp * d - 0.5 * p * (p + 1.0) * dp * d * d
    return torch.where(d < 1.0, u, torch.zeros_like(u))


class BesselBasis(nn.Module):
    """r [n_edges] -> sqrt(2/rc) sin(f_n r / rc) / r * envelope(r) [n_edges, num_basis];
    f_n initialised to nπ (a `freqs` parameter if trainable, else a buffer)."""

    def __init__(self, cutoff: float, num_basis: int, p: int, trainable: bool) -> None:
        super().__init__()
        freqs = math.pi * torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        if trainable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.cutoff = float(cutoff)
        self.prefactor = math.sqrt(2.0 / cutoff)
        self.p = float(p)

    def envelope(self, r: Tensor) -> Tensor:
        return polynomial_envelope(r, self.cutoff, self.p)

    def forward(self, r: Tensor) -> Tensor:
        r1 = r.unsqueeze(-1)  # [n_edges, 1]
        b = self.prefactor * torch.sin(self.freqs * (r1 / self.cutoff)) / r1
        return b * self.envelope(r1)


class RadialMLP(nn.Module):
    """Bias-free MLP with SiLU, weights ~ N(0,1) scaled by 1/sqrt(fan_in) in the forward pass
    (so the output vanishes where the (enveloped) input does, exactly at the cutoff).

    [n_edges, sizes[0]] -> `n_chunks` contiguous [n_edges, sizes[-1] / n_chunks] pieces, one per
    convolution path (one GEMM each: cheaper than one wide GEMM followed by a transposing copy,
    forward and backward)."""

    scales: List[float]

    def __init__(self, sizes: List[int], n_chunks: int = 1) -> None:
        super().__init__()
        assert sizes[-1] % n_chunks == 0
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(a, b)) for a, b in zip(sizes, sizes[1:])])
        self.scales = [1.0 / math.sqrt(a) for a in sizes[:-1]]
        self.act_cst: float = second_moment_constant("silu")
        self.chunk: int = sizes[-1] // n_chunks

    def forward(self, x: Tensor) -> List[Tensor]:
        """The activation's normalisation constant multiplies the next layer's (small) weight
        matrix instead of the [n_edges, hidden] activations: the same function without one pass
        over the widest tensors in the forward, the force backward and the backward of that."""
        n = len(self.scales)
        out: List[Tensor] = []
        for k, w in enumerate(self.weights):
            scale = self.scales[k] * (self.act_cst if k > 0 else 1.0)
            if k < n - 1:
                x = torch.nn.functional.silu(torch.matmul(x, w * scale))
            else:
                for wc in torch.split(w * scale, self.chunk, dim=1):
                    out.append(torch.matmul(x, wc))
        return out


__all__ = ["BesselBasis", "RadialMLP", "polynomial_envelope"]
