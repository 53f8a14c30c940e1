"""The interaction block of the NequIP model: one message-passing layer.

h_i ← [h_i +] Gate(Lin2(Σ_j conv(Lin1 h_j, Y_ij; R(r_ij)) / sqrt(n̄)) + SC(h_i, Z_i))

* Lin1, Lin2: e3nn equivariant linears (mix channels within each irrep);
* conv: `convolution.EdgeConvolution`, with per-path edge weights from a `radial.RadialMLP` of the
  edge basis, normalised by 1/sqrt(avg_num_neighbors);
* SC: the species-dependent self-interaction, e3nn's FullyConnectedTensorProduct of h_i with the
  one-hot species (a separate linear map per element);
* Gate: `activations.Gate`; its input carries one extra 0e gate per gated l > 0 channel;
* residual: only for the irreps that the block's input already has (not the first block, whose
  input is the scalar embedding).
A block only updates the first n_out atoms (the centres of its slots), which is what lets the model
skip ghost atoms that cannot reach the local energies (`pruning.py`).
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn

from e3nn import o3

from mlip.models.nequip.activations import Gate
from mlip.models.nequip.convolution import CGBank, EdgeConvolution
from mlip.models.nequip.radial import RadialMLP


def residual_slices(irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> List[Tuple[int, int, int]]:
    """(input start, output start, length) of every output block that also is an input block, or []
    if some output block is not in the input (then the layer has no residual update at all)."""
    in_start = {}
    i = 0
    for mul, ir in irreps_in:
        in_start[(mul, ir)] = i
        i += mul * ir.dim
    res: List[Tuple[int, int, int]] = []
    o = 0
    for mul, ir in irreps_out:
        if (mul, ir) not in in_start:
            return []
        res.append((in_start[(mul, ir)], o, mul * ir.dim))
        o += mul * ir.dim
    return res


class InteractionBlock(nn.Module):
    """One NequIP layer (see module docstring): [N_in, irreps_in.dim] -> [n_out, irreps_out.dim]."""

    residual: List[Tuple[int, int, int]]  # (input start, output start, length) copied by the resnet

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_target: o3.Irreps,
        irreps_sh: o3.Irreps,
        n_species: int,
        num_basis: int,
        radial_hidden: int,
        radial_layers: int,
        resnet: bool,
        bank: CGBank,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        irreps_target = o3.Irreps(irreps_target)
        self.conv = EdgeConvolution(self.irreps_in, irreps_sh, irreps_target, bank)
        irreps_mid = self.conv.irreps_mid
        # the gate input: scalars, then one 0e gate per gated (l>0) channel, then the gated irreps
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_target if ir.l == 0 and ir in irreps_mid])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_target if ir.l > 0 and ir in irreps_mid])
        n_gates = gated.num_irreps
        irreps_gate_in = scalars + o3.Irreps([(n_gates, (0, 1))]) if n_gates > 0 else scalars
        irreps_gate_in = irreps_gate_in + gated
        self.irreps_out = scalars + gated

        # construction order = parameter initialisation order (kept: a seed gives the same model)
        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.radial = RadialMLP([num_basis] + [radial_hidden] * radial_layers + [self.conv.weight_numel],
                                self.conv.n_paths)
        self.linear_2 = o3.Linear(irreps_mid, irreps_gate_in)
        self.self_connection = o3.FullyConnectedTensorProduct(
            self.irreps_in, o3.Irreps(f"{n_species}x0e"), irreps_gate_in
        )
        self.gate = Gate(scalars, n_gates, gated)
        self.residual = residual_slices(self.irreps_in, self.irreps_out) if resnet else []
        prefix = all(a == o for a, o, _ in self.residual)
        self.residual_prefix: int = sum(n for _, _, n in self.residual) if prefix else 0

    def message_input(self, h: Tensor) -> Tensor:
        """x = Lin1 h [N_in, irreps_in.dim]: what every atom sends along its edges (node-wise, so a
        layer-by-layer evaluation computes it once for all senders of all chunks of centres)."""
        return self.linear_1(h)

    def update(
        self, x: Tensor, h_c: Tensor, onehot_c: Tensor, sh: List[Tensor], t_list: List[Tensor], basis: Tensor,
        slot_src: Tensor, n_out: int, n_max: int, inv_sqrt_nn: float,
    ) -> Tensor:
        """New features [n_out, irreps_out.dim] of n_out centres from the senders' x = Lin1 h
        [N_in, ...], the centres' own features h_c [n_out, irreps_in.dim] and one-hot species
        onehot_c [n_out, n_species], and the centres' slot tensors (S = n_out n_max)."""
        w = self.radial(basis)  # n_paths x [S, u]
        agg = self.conv(x, sh, t_list, w, slot_src, n_out, n_max) * inv_sqrt_nn  # [n_out, irreps_mid.dim]
        y = self.gate(self.linear_2(agg) + self.self_connection(h_c, onehot_c))
        if self.residual_prefix > 0:  # the output is a prefix of the input layout: one slice, no cat
            y = y + (h_c[:, : self.residual_prefix] if self.residual_prefix < h_c.shape[1] else h_c)
        elif len(self.residual) > 0:
            parts: List[Tensor] = []
            for a, _, n in self.residual:
                parts.append(h_c[:, a : a + n])
            y = y + torch.cat(parts, dim=1)
        return y

    def forward(
        self, h: Tensor, onehot: Tensor, sh: List[Tensor], t_list: List[Tensor], basis: Tensor, slot_src: Tensor,
        n_out: int, n_max: int, inv_sqrt_nn: float,
    ) -> Tensor:
        """h [N_in, irreps_in.dim] for every sender, onehot [N_in, n_species]; the slot tensors
        (sh, t_list, basis [S, num_basis], slot_src [S], S = n_out n_max) cover the first n_out
        atoms (the centres), which are the only ones updated: returns [n_out, irreps_out.dim]."""
        x = self.message_input(h)
        h_c = h[:n_out] if n_out < h.shape[0] else h
        onehot_c = onehot[:n_out] if n_out < onehot.shape[0] else onehot
        return self.update(x, h_c, onehot_c, sh, t_list, basis, slot_src, n_out, n_max, inv_sqrt_nn)

__all__ = ["InteractionBlock", "residual_slices"]
