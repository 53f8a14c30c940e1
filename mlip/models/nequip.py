"""NequIP-style E(3)-equivariant message-passing potential (family "nequip"), built on e3nn.

Architecture (after Batzner et al., Nat. Commun. 13, 2453 (2022)), behind the common contract
`forward(species, edge_index, edge_vec) -> atom_energy[N]`:

* species embedding: a learned vector of `num_features` scalars per element;
* edges: spherical harmonics Y(r̂) up to `l_max` (e3nn, "component" normalisation; computed once
  per forward and shared by all layers, as are the coupling tensors T = Y·C), Bessel radial basis
  `sqrt(2/rc) sin(f_n r/rc)/r` (f_n = nπ, trainable) times the polynomial envelope of order p
  (zero with two continuous derivatives at rc; edges at or beyond rc contribute exactly nothing);
* `num_layers` interaction blocks: e3nn Linear → equivariant convolution
  `Σ_j w_p(r_ij) ⊙ (x_j ⊗ Y_ij)` over "uvu" (channel-wise) paths l1 ⊗ l2 → l3 whose per-edge
  weights come from a radial MLP, / sqrt(avg_num_neighbors) → e3nn Linear, plus a species-dependent
  self-interaction (e3nn FullyConnectedTensorProduct with the one-hot species), gate nonlinearity
  (SiLU / tanh on scalars, SiLU gates on l > 0), residual update. Hidden irreps are pruned to what can
  still reach the energy (the last block only produces scalars, the one before only irreps that
  couple with Y to a scalar, ...), which changes nothing in the function, only saves work;
* readout: scalars → `head_hidden` SiLU features φ_i (the "last invariant node features", see
  `invariant_features`) → linear → per-species scale and shift: E_i = scale_s (φ_i · w) + shift_s.

The convolution is ours (see `EdgeConvolution`): edges are laid out per centre atom and the
neighbour sum and Clebsch-Gordan contraction of every path is one batched GEMM, instead of a
generic per-edge tensor product followed by a scatter. Wigner 3j symbols, spherical harmonics,
linears and the self-interaction are e3nn's public API. Everything scripts with TorchScript.

Message passing: `interaction_range = num_layers * cutoff` (LAMMPS builds ghosts that deep).
`forward(..., n_local)` evaluates only what the first n_local atoms' energies depend on.
"""
import functools
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from e3nn import o3

from mlip.models.base import AtomicModel


# --------------------------------------------------------------------------------------------------
# small building blocks
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _second_moment_constant(name: str) -> float:
    """1/sqrt(E[f(z)^2]) for z ~ N(0,1) (Gauss-Hermite quadrature: deterministic, so a model rebuilt
    from its config is bit-identical)."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    zt = torch.tensor(z, dtype=torch.float64)
    f = {"silu": torch.nn.functional.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]
    m2 = float((w * f(zt).numpy() ** 2).sum())
    return 1.0 / math.sqrt(m2)


class RadialMLP(nn.Module):
    """Bias-free MLP with SiLU, weights ~ N(0,1) scaled by 1/sqrt(fan_in) in the forward pass
    (so the output vanishes where the (enveloped) input does, exactly at the cutoff).
    The output comes as `n_chunks` contiguous [S, out/n_chunks] pieces (one GEMM each: cheaper
    than one wide GEMM followed by a transposing copy, forward and backward)."""

    scales: List[float]

    def __init__(self, sizes: List[int], n_chunks: int = 1) -> None:
        super().__init__()
        assert sizes[-1] % n_chunks == 0
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(a, b)) for a, b in zip(sizes, sizes[1:])])
        self.scales = [1.0 / math.sqrt(a) for a in sizes[:-1]]
        self.act_cst: float = _second_moment_constant("silu")
        self.chunk: int = sizes[-1] // n_chunks

    def forward(self, x: Tensor) -> List[Tensor]:
        n = len(self.scales)
        out: List[Tensor] = []
        for k, w in enumerate(self.weights):
            if k < n - 1:
                x = torch.nn.functional.silu(torch.matmul(x, w * self.scales[k])) * self.act_cst
            else:
                for wc in torch.split(w * self.scales[k], self.chunk, dim=1):
                    out.append(torch.matmul(x, wc))
        return out


class BesselBasis(nn.Module):
    """sqrt(2/rc) sin(f_n r / rc) / r, f_n initialised to nπ (trainable), times the polynomial
    envelope of order p; exactly zero for r >= rc."""

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
        p = self.p
        d = r / self.cutoff
        dp = torch.pow(d, p)
        u = 1.0 - 0.5 * (p + 1.0) * (p + 2.0) * dp + p * (p + 2.0) * dp * d - 0.5 * p * (p + 1.0) * dp * d * d
        return torch.where(d < 1.0, u, torch.zeros_like(u))

    def forward(self, r: Tensor) -> Tensor:
        r1 = r.unsqueeze(-1)
        b = self.prefactor * torch.sin(self.freqs * (r1 / self.cutoff)) / r1
        return b * self.envelope(r1)


class Gate(nn.Module):
    """Gate nonlinearity on a flat e3nn layout [scalars | gates (0e) | gated irreps]:
    SiLU on even scalars, tanh on odd ones, gated irreps multiplied by SiLU(gate) (normalised)."""

    scalar_blocks: List[Tuple[int, int, bool]]
    gated_blocks: List[Tuple[int, int, int, int]]

    def __init__(self, irreps_scalars: o3.Irreps, n_gates: int, irreps_gated: o3.Irreps) -> None:
        super().__init__()
        self.n_scalar_dim = irreps_scalars.dim
        self.n_gates = n_gates
        # scalar blocks: (start, stop, odd)
        blocks: List[Tuple[int, int, bool]] = []
        i = 0
        for mul, ir in irreps_scalars:
            blocks.append((i, i + mul, ir.p == -1))
            i += mul
        self.scalar_blocks = blocks
        gated: List[Tuple[int, int, int, int]] = []  # (gate start, start, mul, dim)
        g = 0
        i = irreps_scalars.dim + n_gates
        for mul, ir in irreps_gated:
            gated.append((g, i, mul, ir.dim))
            g += mul
            i += mul * ir.dim
        assert g == n_gates
        self.gated_blocks = gated
        self.dim_in = i
        self.silu_cst: float = _second_moment_constant("silu")
        self.tanh_cst: float = _second_moment_constant("tanh")

    def forward(self, x: Tensor) -> Tensor:
        outs: List[Tensor] = []
        for a, b, odd in self.scalar_blocks:
            if odd:
                outs.append(torch.tanh(x[:, a:b]) * self.tanh_cst)
            else:
                outs.append(torch.nn.functional.silu(x[:, a:b]) * self.silu_cst)
        if self.n_gates > 0:
            s = self.n_scalar_dim
            gates = torch.nn.functional.silu(x[:, s : s + self.n_gates]) * self.silu_cst
            for g, i, mul, d in self.gated_blocks:
                v = x[:, i : i + mul * d].reshape(-1, mul, d) * gates[:, g : g + mul].unsqueeze(-1)
                outs.append(v.reshape(-1, mul * d))
        return torch.cat(outs, dim=1)


def _hidden_irreps(num_features: int, l_max: int, parity: bool) -> o3.Irreps:
    ps = (1, -1) if parity else (1,)
    return o3.Irreps([(num_features, (l, p)) for l in range(l_max + 1) for p in ps])


def _sh_irreps(l_max: int, parity: bool) -> o3.Irreps:
    # parity=True: true spherical harmonics (1o, 2e, ...), O(3); parity=False: all even, SO(3) only
    return o3.Irreps.spherical_harmonics(l_max, p=-1 if parity else 1)


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
        """One buffer [2 l_max + 1, Σ d1 d3] (rows padded) and (sh irrep index l2, row count d2,
        column start, column count) per entry. C[m2, (i1, k3)] = w3j(l1, l2, l3)[i1, m2, k3] sqrt(2 l3 + 1)."""
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


class EdgeConvolution(nn.Module):
    """The equivariant convolution out_i = Σ_j w(r_ij) ⊙ (x_j ⊗ Y(r̂_ij)), "uvu" (channel-wise) paths.

    Edges are laid out per centre atom, padded to the graph's largest neighbour count n_max
    ("slots"; padding slots have zero weights). For a path l1 ⊗ l2 → l3 of an input block
    (multiplicity u, d1 = 2 l1 + 1):
        out_p[i, k, u] = Σ_{s ∈ slots(i)} Σ_a T_p[s, a, k] (w_p[s, u] x_{j(s)}[a, u]),
        T_p[s, a, k] = Σ_m C_p[a, m, k] Y_l2[s, m]   (C = Wigner 3j · sqrt(2 l3 + 1), e3nn's
        "component" normalisation; T is computed once per forward and shared by the blocks).
    The sum over neighbours *and* the contraction over a is one batched GEMM per path
    ([d3, n_max d1] @ [n_max d1, u] per atom), so no per-edge message tensor is ever materialised
    and there is no scatter. Paths with l2 = 0 (C = identity) are a plain sum over slots, paths with
    l1 = 0 a GEMM against Y. Output: [N, irreps_mid.dim] in the flat e3nn layout of `irreps_mid`
    (one (u, 2 l3 + 1) block per path, paths in input-block order).
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
        the first n_nodes <= N_in atoms (the centres)."""
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


class InteractionBlock(nn.Module):
    """One NequIP layer: h_i ← [h_i +] Gate(Lin2(Σ_j conv(Lin1 h_j, Y_ij; R(r_ij)) / sqrt(n̄)) + SC(h_i, Z_i))."""

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

        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.radial = RadialMLP([num_basis] + [radial_hidden] * radial_layers + [self.conv.weight_numel],
                                self.conv.n_paths)
        self.linear_2 = o3.Linear(irreps_mid, irreps_gate_in)
        self.self_connection = o3.FullyConnectedTensorProduct(
            self.irreps_in, o3.Irreps(f"{n_species}x0e"), irreps_gate_in
        )
        self.gate = Gate(scalars, n_gates, gated)
        # residual update where the output irreps are all present in the input (not the first block)
        res: List[Tuple[int, int, int]] = []
        in_start = {}
        i = 0
        for mul, ir in self.irreps_in:
            in_start[(mul, ir)] = i
            i += mul * ir.dim
        o = 0
        ok = True
        for mul, ir in self.irreps_out:
            if (mul, ir) in in_start:
                res.append((in_start[(mul, ir)], o, mul * ir.dim))
            else:
                ok = False
            o += mul * ir.dim
        self.residual = res if (resnet and ok) else []

    def forward(
        self, h: Tensor, onehot: Tensor, sh: List[Tensor], t_list: List[Tensor], basis: Tensor, slot_src: Tensor,
        n_out: int, n_max: int, inv_sqrt_nn: float,
    ) -> Tensor:
        """h [N_in, irreps_in.dim] for every sender; the slot tensors cover the first n_out atoms
        (the centres), which are the only ones updated: returns [n_out, irreps_out.dim]."""
        w = self.radial(basis)
        x = self.linear_1(h)
        agg = self.conv(x, sh, t_list, w, slot_src, n_out, n_max) * inv_sqrt_nn
        if n_out < h.shape[0]:
            h = h[:n_out]
        if n_out < onehot.shape[0]:
            onehot = onehot[:n_out]
        y = self.gate(self.linear_2(agg) + self.self_connection(h, onehot))
        if len(self.residual) > 0:
            parts: List[Tensor] = []
            for a, _, n in self.residual:
                parts.append(h[:, a : a + n])
            y = y + torch.cat(parts, dim=1)
        return y


def _needed_irreps(hidden: o3.Irreps, irreps_sh: o3.Irreps, num_layers: int) -> List[o3.Irreps]:
    """Target irreps of every block, pruned to what can still reach the scalar energy: the last
    block outputs only 0e, the one before only irreps that couple with Y to 0e, and so on."""
    needed = [o3.Irreps("0e")]
    for _ in range(num_layers - 1):
        nxt = needed[0]
        keep = o3.Irreps(
            [(m, ir) for m, ir in hidden
             if any(ir3 in nxt for _, ir2 in irreps_sh for ir3 in ir * ir2)]
        )
        needed.insert(0, keep)
    return needed


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
class NequIP(AtomicModel):
    """NequIP-style equivariant potential (see module docstring).

    Args:
        species: element names (model species order).
        cutoff: radial cutoff (Å).
        l_max: maximum rotation order of the hidden features and edge spherical harmonics (0–3).
        parity: O(3) (True: features of both parities, true spherical harmonics) or SO(3) only.
        num_features: multiplicity of each hidden irrep.
        num_layers: interaction blocks (interaction_range = num_layers * cutoff).
        num_basis: Bessel functions; trainable_basis: learn their frequencies.
        envelope_p: order p of the polynomial cutoff envelope.
        radial_hidden, radial_layers: the per-layer radial MLP (edge basis → TP weights).
        head_hidden: size of the invariant readout features φ_i.
        avg_num_neighbors: message normalisation 1/sqrt(avg); None = not normalised until
            `fit_statistics` sets it from the data.
        energy_scale: initial per-species energy scale (trainable); `fit_statistics` sets it to
            the RMS force of the data when forces are given.
        resnet: residual updates of the node features.
    """

    family = "nequip"

    def __init__(
        self,
        species: List[str],
        cutoff: float = 5.0,
        l_max: int = 2,
        parity: bool = True,
        num_features: int = 32,
        num_layers: int = 3,
        num_basis: int = 8,
        trainable_basis: bool = True,
        envelope_p: int = 6,
        radial_hidden: int = 64,
        radial_layers: int = 2,
        head_hidden: int = 16,
        avg_num_neighbors: Optional[float] = None,
        energy_scale: float = 1.0,
        resnet: bool = True,
    ) -> None:
        super().__init__(species, cutoff)
        if not 0 <= int(l_max) <= 3:
            raise ValueError(f"l_max must be in 0..3, got {l_max}")
        if int(num_layers) < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if avg_num_neighbors is not None and not avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
        self._config: Dict[str, Any] = dict(
            species=list(species), cutoff=float(cutoff), l_max=int(l_max), parity=bool(parity),
            num_features=int(num_features), num_layers=int(num_layers), num_basis=int(num_basis),
            trainable_basis=bool(trainable_basis), envelope_p=int(envelope_p),
            radial_hidden=int(radial_hidden), radial_layers=int(radial_layers), head_hidden=int(head_hidden),
            avg_num_neighbors=None if avg_num_neighbors is None else float(avg_num_neighbors),
            energy_scale=float(energy_scale), resnet=bool(resnet),
        )
        n_species = len(species)
        self.n_species = n_species
        self.num_layers = int(num_layers)
        self.interaction_range = float(num_layers) * float(cutoff)
        self.inv_sqrt_nn: float = 1.0 if avg_num_neighbors is None else 1.0 / math.sqrt(avg_num_neighbors)

        self.irreps_sh = _sh_irreps(int(l_max), bool(parity))
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.sh_dims: List[int] = [ir.dim for _, ir in self.irreps_sh]
        self.basis = BesselBasis(cutoff, int(num_basis), int(envelope_p), bool(trainable_basis))
        self.embedding = nn.Embedding(n_species, int(num_features))

        hidden = _hidden_irreps(int(num_features), int(l_max), bool(parity))
        targets = _needed_irreps(hidden, self.irreps_sh, int(num_layers))
        targets[-1] = o3.Irreps(f"{int(num_features)}x0e")
        irreps = o3.Irreps(f"{int(num_features)}x0e")
        blocks = []
        bank = CGBank()
        self.irreps_layers: List[str] = []  # output irreps of every block (for tests/analysis)
        for k in range(int(num_layers)):
            target = o3.Irreps([(m, ir) for m, ir in targets[k]])
            blk = InteractionBlock(irreps, target, self.irreps_sh, n_species, int(num_basis),
                                   int(radial_hidden), int(radial_layers), bool(resnet), bank)
            blocks.append(blk)
            irreps = blk.irreps_out
            self.irreps_layers.append(str(irreps))
        self.blocks = nn.ModuleList(blocks)
        cg_bank, cg_meta = bank.matrices()
        # float64 whatever the default dtype (a float32-rounded C is not exactly equivariant in
        # float64); cast to the input dtype where used
        self.register_buffer("cg_bank", cg_bank, persistent=False)
        self.cg_meta: List[Tuple[int, int, int, int]] = cg_meta
        nf = int(num_features)
        self.head_w1 = nn.Parameter(torch.randn(nf, int(head_hidden)))
        self.head_b1 = nn.Parameter(torch.zeros(int(head_hidden)))
        self.head_w2 = nn.Parameter(torch.randn(int(head_hidden), 1))
        self.head_s1: float = 1.0 / math.sqrt(nf)
        self.head_s2: float = 1.0 / math.sqrt(int(head_hidden))
        self.silu_cst: float = _second_moment_constant("silu")
        self.energy_scale = nn.Parameter(torch.full((n_species,), float(energy_scale)))
        self.register_buffer("energy_shift", torch.zeros(n_species))

    # ---- contract ---------------------------------------------------------------------------------
    def config(self) -> Dict[str, Any]:
        return dict(self._config)

    def extra_metadata(self) -> Dict[str, Any]:
        return {"nequip": {"irreps_sh": str(self.irreps_sh), "irreps_layers": list(self.irreps_layers)}}

    def set_energy_bias(self, bias: Tensor) -> None:
        bias = torch.as_tensor(bias, dtype=self.energy_shift.dtype).reshape(-1)
        if bias.shape[0] != self.n_species:
            raise ValueError(f"energy bias has {bias.shape[0]} entries, the model has {self.n_species} species")
        with torch.no_grad():
            self.energy_shift.copy_(bias)

    def set_avg_num_neighbors(self, avg: float) -> None:
        if not avg > 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg}")
        self.inv_sqrt_nn = 1.0 / math.sqrt(float(avg))
        self._config["avg_num_neighbors"] = float(avg)

    @torch.jit.unused
    def fit_statistics(
        self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, forces: Optional[Tensor] = None
    ) -> Dict[str, float]:
        """From a (batched) sample of training graphs: `avg_num_neighbors` = edges within the cutoff
        per atom; with `forces`, the per-species energy scale = their RMS (NequIP's default).
        The fitted values go into `config()`, so a model rebuilt from it is identical."""
        out: Dict[str, float] = {}
        with torch.no_grad():
            n_atoms = int(species.shape[0])
            r = torch.linalg.norm(edge_vec.to(torch.float64), dim=-1)
            n_edges = int((r < self.cutoff).sum())
            if n_atoms > 0 and n_edges > 0:
                self.set_avg_num_neighbors(n_edges / n_atoms)
                out["avg_num_neighbors"] = n_edges / n_atoms
            if forces is not None and forces.numel() > 0:
                rms = float(forces.to(torch.float64).pow(2).mean().sqrt())
                if rms > 0:
                    self.energy_scale.fill_(rms)
                    self._config["energy_scale"] = rms
                    out["energy_scale"] = rms
        return out

    # ---- computation ------------------------------------------------------------------------------
    def _slots(self, n_nodes: int, edge_index: Tensor) -> Tuple[Tensor, int]:
        """Per-centre padded edge layout: slot_edge [N n_max] = edge of slot (i, s), or E (padding)."""
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

    def _hops(self, n_nodes: int, edge_index: Tensor, n_local: int) -> Tensor:
        """Graph distance (in edges, capped at num_layers) of every atom from the first n_local."""
        n_layers = self.num_layers
        dist = torch.full((n_nodes,), n_layers, dtype=torch.long, device=edge_index.device)
        dist[:n_local] = 0
        dst = edge_index[0]
        src = edge_index[1]
        for k in range(1, n_layers):
            front = dist.index_select(0, dst) == k - 1
            reached = torch.zeros(n_nodes, dtype=torch.bool, device=dist.device)
            reached[src[front]] = True
            dist = torch.where(reached & (dist > k), torch.full_like(dist, k), dist)
        return dist

    def _run(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, keep_all: bool, n_local: int = -1) -> List[Tensor]:
        """Node features after the blocks (all of them if keep_all, else the last).

        With 0 <= n_local < N (a LAMMPS graph: locals first, then ghosts out to interaction_range),
        block k only updates atoms within num_layers - 1 - k edges of a local one — the others
        cannot influence the local energies — and the returned features cover the first
        n_local atoms only (the exact same values as without pruning)."""
        n_nodes = species.shape[0]
        n_layers = self.num_layers
        prune = 0 <= n_local < n_nodes
        n_keep: List[int] = [n_nodes] * n_layers  # atoms updated by block k (a prefix after reordering)
        if prune:
            dist = self._hops(n_nodes, edge_index, n_local)
            _, order = torch.sort(dist, stable=True)  # locals keep their places
            inv = torch.empty_like(order)
            inv[order] = torch.arange(n_nodes, device=order.device)
            for k in range(n_layers):
                n_keep[k] = int((dist <= n_layers - 1 - k).sum())
            species = species.index_select(0, order)
            edge_index = inv[edge_index]
            keep = edge_index[0] < n_keep[0]  # edges into atoms that block 0 updates
            edge_index = edge_index[:, keep]
            edge_vec = edge_vec[keep]
            if bool((edge_index[0, 1:] < edge_index[0, :-1]).any()):
                perm = torch.sort(edge_index[0], stable=True)[1]
                edge_index = edge_index[:, perm]
                edge_vec = edge_vec[perm]
        slot_edge, n_max = self._slots(n_keep[0], edge_index)
        # padding slots: a vector beyond the cutoff (zero radial weights, finite harmonics), sender 0
        pad_vec = torch.zeros((1, 3), dtype=edge_vec.dtype, device=edge_vec.device)
        pad_vec[0, 0] = 2.0 * self.cutoff + 1.0
        vec = torch.cat([edge_vec, pad_vec], 0).index_select(0, slot_edge)
        pad_src = torch.zeros(1, dtype=torch.long, device=edge_index.device)
        slot_src = torch.cat([edge_index[1], pad_src]).index_select(0, slot_edge)
        r = torch.linalg.norm(vec, dim=-1)
        sh = torch.split(self.sh(vec), self.sh_dims, dim=1)
        # T = Y @ C serves the l1 > 0 paths, i.e. blocks 1.. (block 0 sees scalars only): their slots
        n_t = (n_keep[1] if n_layers > 1 else 0) * n_max
        t_list: List[Tensor] = []
        cg_bank = self.cg_bank.to(edge_vec.dtype)
        for l2, d2, c0, nc in self.cg_meta:
            y = sh[l2][:n_t] if n_t < n_keep[0] * n_max else sh[l2]
            t_list.append(torch.matmul(y, cg_bank[:d2, c0 : c0 + nc]))
        basis = self.basis(r)
        onehot = torch.nn.functional.one_hot(species, self.n_species).to(edge_vec.dtype)
        h = self.embedding(species).to(edge_vec.dtype)
        feats: List[Tensor] = []
        for k, blk in enumerate(self.blocks):
            n_s = n_keep[k] * n_max
            if n_keep[k] < n_keep[0]:
                sh_k = [y[:n_s] for y in sh]
                t_k = [t[:n_s] for t in t_list] if n_keep[k] < n_keep[1] else t_list
                h = blk(h, onehot, sh_k, t_k, basis[:n_s], slot_src[:n_s], n_keep[k], n_max, self.inv_sqrt_nn)
            else:
                h = blk(h, onehot, sh, t_list, basis, slot_src, n_keep[k], n_max, self.inv_sqrt_nn)
            if keep_all:
                feats.append(h)
        if not keep_all:
            feats.append(h)
        return feats

    def _head_features(self, h: Tensor) -> Tensor:
        return torch.nn.functional.silu(torch.matmul(h, self.head_w1 * self.head_s1) + self.head_b1) * self.silu_cst

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int = -1) -> Tensor:
        """Per-atom energies [N]. Optional n_local (0 <= n_local < N, locals first): only the local
        energies are computed (ghost entries are 0) and only the atoms that can influence them are
        updated, layer by layer — identical local energies and gradients, far less work on a
        LAMMPS ghost shell num_layers * cutoff deep."""
        h = self._run(species, edge_index, edge_vec, False, n_local)[-1]
        n = h.shape[0]
        sp = species[:n] if n < species.shape[0] else species
        phi = self._head_features(h)
        e = torch.matmul(phi, self.head_w2 * self.head_s2).squeeze(-1)
        e = e * self.energy_scale.index_select(0, sp) + self.energy_shift.index_select(0, sp)
        if n < species.shape[0]:
            e = torch.cat([e, torch.zeros(species.shape[0] - n, dtype=e.dtype, device=e.device)])
        return e

    @torch.jit.export
    def invariant_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom last invariant features φ_i [N, head_hidden]: the atomic energy is linear in them,
        E_i = scale_s (φ_i · w) + shift_s (what a MaxVol extrapolation grade is built on)."""
        return self._head_features(self._run(species, edge_index, edge_vec, False)[-1])

    @torch.jit.export
    def grade_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int = -1) -> Tensor:
        """Per-atom MaxVol rows (extrapolation grade, see `mlip.active.nn_grade`): the derivatives of E_i
        with respect to the readout's linear parameters (shift_s, w), [onehot(t_i), scale_{t_i} φ_i],
        [n, n_species + head_hidden]; n = n_local with 0 <= n_local < N (pruned evaluation), else N."""
        h = self._run(species, edge_index, edge_vec, False, n_local)[-1]
        n = h.shape[0]
        sp = species[:n] if n < species.shape[0] else species
        phi = self._head_features(h) * self.energy_scale.index_select(0, sp).to(h.dtype).unsqueeze(1)
        onehot = torch.nn.functional.one_hot(sp, self.n_species).to(h.dtype)
        return torch.cat([onehot, phi], 1)

    @torch.jit.export
    def scalar_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Scalars output by the last interaction block [N, num_features]."""
        return self._run(species, edge_index, edge_vec, False)[-1]

    @torch.jit.unused
    def node_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> List[Tensor]:
        """Node features after every block (flat e3nn layout, irreps `self.irreps_layers[k]`)."""
        return self._run(species, edge_index, edge_vec, True)


__all__ = ["NequIP"]
