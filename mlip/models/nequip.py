"""NequIP-style E(3)-equivariant message-passing potential (family "nequip"), built on e3nn.

Architecture (Batzner et al., Nat. Commun. 13, 2453 (2022)), behind the common contract
`forward(species, edge_index, edge_vec) -> atom_energy[N]`:

* species embedding: a learned vector of `num_features` scalars per element;
* edges: spherical harmonics Y(r̂) up to `l_max` (computed once per forward and shared by all
  layers), Bessel radial basis `sqrt(2/rc) sin(nπr/rc)/r` (trainable frequencies) times the
  polynomial envelope `u_p(r/rc)` (zero, with p−1 continuous derivatives... in practice C², for r ≥ rc);
* `num_layers` interaction blocks: linear → equivariant convolution `Σ_j R(r_ij) ⊗ (h_j ⊗ Y_ij)`
  (e3nn "uvu" tensor product whose per-edge weights come from a radial MLP) / sqrt(avg_num_neighbors)
  → linear, plus a species-dependent self-interaction, gate nonlinearity, residual update.
  The last block only produces scalars (nothing else is read after it);
* readout: scalars → `head_hidden` SiLU features φ_i (the "last invariant node features", see
  `invariant_features`) → linear → per-species scale and shift: E_i = scale_s ε_i + shift_s.

Message passing: `interaction_range = num_layers * cutoff` (LAMMPS builds ghosts that deep).
Everything scripts with TorchScript (e3nn 0.6 modules script directly; the gate and MLP are ours).
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
    (so the output vanishes where the (enveloped) input does, exactly at the cutoff)."""

    scales: List[float]

    def __init__(self, sizes: List[int]) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(a, b)) for a, b in zip(sizes, sizes[1:])])
        self.scales: List[float] = [1.0 / math.sqrt(a) for a in sizes[:-1]]
        self.act_cst: float = _second_moment_constant("silu")

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.scales)
        for k, w in enumerate(self.weights):
            x = torch.matmul(x, w * self.scales[k])
            if k < n - 1:
                x = torch.nn.functional.silu(x) * self.act_cst
        return x


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


class EdgeConvolution(nn.Module):
    """The equivariant edge convolution Σ_j w(r_ij) ⊙ (x_j ⊗ Y(r̂_ij)) with "uvu" (channel-wise) paths.

    For an input irrep block (multiplicity u, dimension d1) and a path l1 ⊗ l2 → l3:
    m_p[e, u, k] = w_p[e, u] Σ_i x_j[u, i] T_p[e, i, k],  T_p[e, i, k] = Σ_m C_p[i, m, k] Y_l2[e, m],
    C = Wigner 3j · sqrt(2 l3 + 1) (component normalisation, like e3nn's). Each path is one small GEMM
    (T_p), one batched matmul (or a broadcast product when l1, l2 or l3 is 0, where C is trivial), the
    weight product on whichever side is smaller, and one scatter-add straight into the output block:
    a few passes over the E·u·(2 l3 + 1) messages, and no generic tensor-product overhead.
    Output: node features [N, irreps_mid.dim] in the flat e3nn layout of `irreps_mid` (one
    (u, 2 l3 + 1) block per path, paths in input-block order).
    """

    in_blocks: List[Tuple[int, int, int]]  # (x start, u, d1)
    # (input block, sh irrep index, d3, cg index, kind, weight index); kind 0: l2 = 0, 1: l1 = 0, 2: general
    paths: List[Tuple[int, int, int, int, int, int]]

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_target: o3.Irreps) -> None:
        super().__init__()
        sh_offsets = []
        off = 0
        for mul, ir in irreps_sh:
            assert mul == 1
            sh_offsets.append(off)
            off += ir.dim
        mid = []
        blocks: List[Tuple[int, int, int]] = []
        paths: List[Tuple[int, int, int, int, int, int]] = []
        cgs = []
        muls = set()
        x_off = 0
        for mul, ir1 in irreps_in:
            muls.add(mul)
            b = len(blocks)
            used = False
            for i2, (_, ir2) in enumerate(irreps_sh):
                for ir3 in ir1 * ir2:
                    if ir3 not in irreps_target:
                        continue
                    used = True
                    if ir2.l == 0:
                        kind, ci = 0, -1
                    elif ir1.l == 0:
                        kind, ci = 1, -1
                    else:
                        kind, ci = 2, len(cgs)
                        w3j = o3.wigner_3j(ir1.l, ir2.l, ir3.l, dtype=torch.float64) * math.sqrt(ir3.dim)
                        # [m2, (i1, k3)] so that T = Y_l2 @ C is [E, d1 * d3]
                        cgs.append(w3j.permute(1, 0, 2).reshape(ir2.dim, ir1.dim * ir3.dim))
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
        self.cg = nn.ParameterList([nn.Parameter(c.to(torch.get_default_dtype()), requires_grad=False) for c in cgs])
        self.n_cg = len(cgs)

    def forward(
        self, x: Tensor, sh_parts: List[Tensor], w: Tensor, edge_src: Tensor, edge_dst: Tensor, n_nodes: int
    ) -> Tensor:
        """x [N, irreps_in.dim]; sh_parts: Y_l [E, 2l+1] per SH irrep; w [E, n_paths * u] (path-major)."""
        n_edges = w.shape[0]
        u = self.u
        # split (not slice) so that each backward is one cat instead of a zero-filled copy per piece
        ws = torch.split(w.reshape(n_edges, self.n_paths, u).unsqueeze(-1), 1, dim=1)
        xs: List[Tensor] = []
        for x0, mul, d1 in self.in_blocks:
            xs.append(x[:, x0 : x0 + mul * d1].reshape(-1, mul, d1).index_select(0, edge_src))  # [E, u, d1]
        cgs: List[Tensor] = []
        for c in self.cg:
            cgs.append(c)
        outs: List[Tensor] = []
        for b, i2, d3, ci, kind, p in self.paths:
            xa = xs[b]
            wp = ws[p].squeeze(1)  # [E, u, 1]
            y = sh_parts[i2]
            if kind == 0:  # Y_0 = 1, C = identity: m = w x
                m = xa * wp
            elif kind == 1:  # scalar input, C = identity: m = (w x) Y
                m = (xa * wp) * y.unsqueeze(1)
            else:
                d1 = xa.shape[2]
                t = torch.matmul(y, cgs[ci]).reshape(n_edges, d1, d3)
                if d1 <= d3:
                    m = torch.bmm(xa * wp, t)
                else:
                    m = torch.bmm(xa, t) * wp
            agg = torch.zeros((n_nodes, u * d3), dtype=m.dtype, device=m.device)
            outs.append(agg.index_add(0, edge_dst, m.reshape(n_edges, u * d3)))
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
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        irreps_target = o3.Irreps(irreps_target)
        self.conv = EdgeConvolution(self.irreps_in, irreps_sh, irreps_target)
        irreps_mid = self.conv.irreps_mid
        # the gate input: scalars, then one 0e gate per gated (l>0) channel, then the gated irreps
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_target if ir.l == 0 and ir in irreps_mid])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_target if ir.l > 0 and ir in irreps_mid])
        n_gates = gated.num_irreps
        irreps_gate_in = scalars + o3.Irreps([(n_gates, (0, 1))]) if n_gates > 0 else scalars
        irreps_gate_in = irreps_gate_in + gated
        self.irreps_out = scalars + gated

        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        self.radial = RadialMLP([num_basis] + [radial_hidden] * radial_layers + [self.conv.weight_numel])
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
        self, h: Tensor, onehot: Tensor, sh: List[Tensor], basis: Tensor, edge_src: Tensor, edge_dst: Tensor,
        inv_sqrt_nn: float,
    ) -> Tensor:
        # edge_dst = centre i (receives), edge_src = neighbour j (sends)
        w = self.radial(basis)
        x = self.linear_1(h)
        agg = self.conv(x, sh, w, edge_src, edge_dst, h.shape[0]) * inv_sqrt_nn
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
        self.irreps_layers: List[str] = []  # output irreps of every block (for tests/analysis)
        for k in range(int(num_layers)):
            target = o3.Irreps([(m, ir) for m, ir in targets[k]])
            blk = InteractionBlock(irreps, target, self.irreps_sh, n_species, int(num_basis),
                                   int(radial_hidden), int(radial_layers), bool(resnet))
            blocks.append(blk)
            irreps = blk.irreps_out
            self.irreps_layers.append(str(irreps))
        self.blocks = nn.ModuleList(blocks)
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
    def _scalar_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Scalars after the last interaction block, [N, num_features]."""
        return self._run(species, edge_index, edge_vec, False)[-1]

    def _run(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, keep_all: bool) -> List[Tensor]:
        edge_dst = edge_index[0]
        edge_src = edge_index[1]
        r = torch.linalg.norm(edge_vec, dim=-1)
        sh = torch.split(self.sh(edge_vec), self.sh_dims, dim=1)
        basis = self.basis(r)
        onehot = torch.nn.functional.one_hot(species, self.n_species).to(edge_vec.dtype)
        h = self.embedding(species).to(edge_vec.dtype)
        feats: List[Tensor] = []
        for blk in self.blocks:
            h = blk(h, onehot, sh, basis, edge_src, edge_dst, self.inv_sqrt_nn)
            if keep_all:
                feats.append(h)
        if not keep_all:
            feats.append(h)
        return feats

    def _head_features(self, h: Tensor) -> Tensor:
        return torch.nn.functional.silu(torch.matmul(h, self.head_w1 * self.head_s1) + self.head_b1) * self.silu_cst

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        h = self._run(species, edge_index, edge_vec, False)[-1]
        phi = self._head_features(h)
        e = torch.matmul(phi, self.head_w2 * self.head_s2).squeeze(-1)
        return e * self.energy_scale.index_select(0, species) + self.energy_shift.index_select(0, species)

    @torch.jit.export
    def invariant_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom last invariant features φ_i [N, head_hidden]: the atomic energy is linear in them,
        E_i = scale_s (φ_i · w) + shift_s (what a MaxVol extrapolation grade is built on)."""
        return self._head_features(self._run(species, edge_index, edge_vec, False)[-1])

    @torch.jit.export
    def scalar_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Scalars output by the last interaction block [N, num_features]."""
        return self._run(species, edge_index, edge_vec, False)[-1]

    @torch.jit.unused
    def node_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> List[Tensor]:
        """Node features after every block (flat e3nn layout, irreps `self.irreps_layers[k]`)."""
        return self._run(species, edge_index, edge_vec, True)


__all__ = ["NequIP"]
