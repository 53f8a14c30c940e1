"""Deep Potential, smooth edition with the two-body embedding descriptor `se_e2_a` (Zhang et al. 2018).

Edge-list formulation: instead of padding every atom to `sel` neighbours, every quantity is computed
per edge and summed per centre atom with `index_add_`. Two consequences worth knowing:

* `sel` only sets the constant normalisation 1/Σsel of the descriptor sum (as in DeePMD-kit); it is no
  longer a hard cap, so dense configurations never silently drop neighbours.
* DeePMD-kit normalises the environment matrix with (R − avg)/std. With padding, a neighbour at the
  cutoff and a padding slot give the same contribution, which keeps the model smooth. Without padding
  we keep the shift only on the embedding-net input and scale (never shift) the environment-matrix rows,
  so every edge's contribution vanishes with s(r) at rcut (C² through the switching polynomial).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from mlip.models.base import AtomicModel
from mlip.models.dp_fused import check_fused_option, check_step_option, fused_embedding


def smooth_inverse(r: Tensor, rcut_smth: float, rcut: float) -> Tensor:
    """s(r) = 1/r below rcut_smth, switched to 0 at rcut by u³(−6u² + 15u − 10) + 1 (C²)."""
    u = ((r - rcut_smth) / (rcut - rcut_smth)).clamp(0.0, 1.0)
    sw = u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0
    return sw / r


class ResLayer(nn.Module):
    """One tanh layer with DeePMD's residual rule: y = x + h when widths match, y = [x, x] + h when the
    width doubles, plain h otherwise; h = act(Wx+b), times a trainable time step with `resnet_dt`."""

    def __init__(self, n_in: int, n_out: int, resnet_dt: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        nn.init.normal_(self.linear.weight, std=1.0 / (n_in + n_out) ** 0.5)
        nn.init.normal_(self.linear.bias, std=1.0)
        self.kind = 1 if n_in == n_out else (2 if n_out == 2 * n_in else 0)
        self.use_dt = bool(resnet_dt and self.kind != 0)
        self.dt = nn.Parameter(torch.full((n_out,), 0.1) + 0.001 * torch.randn(n_out), requires_grad=self.use_dt)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.linear(x))
        if self.use_dt:
            h = h * self.dt
        if self.kind == 1:
            return x + h
        if self.kind == 2:
            return torch.cat([x, x], dim=-1) + h
        return h


class ResMLP(nn.Module):
    """Stack of `ResLayer`s with an optional linear output (the fitting net's energy head)."""

    def __init__(self, n_in: int, widths: Sequence[int], n_out: int = 0, resnet_dt: bool = False) -> None:
        super().__init__()
        dims = [n_in] + list(widths)
        self.layers = nn.ModuleList(ResLayer(a, b, resnet_dt) for a, b in zip(dims[:-1], dims[1:]))
        self.has_out = n_out > 0
        self.out = nn.Linear(dims[-1], max(n_out, 1))
        nn.init.normal_(self.out.weight, std=1.0 / (dims[-1] + 1) ** 0.5)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        if self.has_out:
            x = self.out(x)
        return x

    def hidden(self, x: Tensor) -> Tensor:
        """The last hidden layer (the input of the linear output), [.., widths[-1]]."""
        for layer in self.layers:
            x = layer(x)
        return x




class DeepPotSeA(AtomicModel):
    """Deep Potential with the se_e2_a descriptor.

    Parameters follow DeePMD-kit's names: `rcut`, `rcut_smth`, `sel` (per neighbour species),
    `neuron` (embedding widths), `axis_neuron`, `fitting_neuron`, `type_one_side`, `resnet_dt`.
    `fused` (training only, see `mlip.models.dp_fused`): run the embedding nets through the fused op
    in eager autograd; the function, the parameters and every export are the same either way.
    `env_stats`: the environment statistics over the edges ("edges", default) or, as DeePMD-kit, over
    all Σsel slots of each centre with empty slots counting as zeros ("slots").
    `fused_step` (training only, with `fused`): run each embedding net on a grid of this spacing in s̃
    and interpolate (cubic Hermite in value and slope) to the edges; ~20× fewer net evaluations, the
    function differs from the net by ~1e-8 relative at 0.02 (mlip.models.dp_fused.tabulated_embedding).
    """

    family = "deepmd"
    # a training-time switch, not part of the scripted module (exports stay as they were)
    __jit_ignored_attributes__ = ["fused", "fused_step"]

    def __init__(
        self,
        species: List[str],
        rcut: float = 6.0,
        rcut_smth: float = 0.5,
        sel: Optional[List[int]] = None,
        neuron: Sequence[int] = (25, 50, 100),
        axis_neuron: int = 16,
        fitting_neuron: Sequence[int] = (240, 240, 240),
        type_one_side: bool = False,
        resnet_dt: bool = True,
        seed: Optional[int] = None,
        fused: bool = True,
        env_shift: bool = False,
        env_stats: str = "edges",
        fused_step: Optional[float] = None,
    ) -> None:
        super().__init__(species, rcut)
        if not 0 <= rcut_smth < rcut:
            raise ValueError(f"need 0 <= rcut_smth < rcut, got rcut_smth={rcut_smth}, rcut={rcut}")
        n = len(species)
        sel = list(sel) if sel is not None else [50] * n
        if len(sel) != n:
            raise ValueError(f"sel has {len(sel)} entries but there are {n} species {species}")
        if axis_neuron > neuron[-1]:
            raise ValueError(f"axis_neuron ({axis_neuron}) must not exceed the last embedding width ({neuron[-1]})")
        self._cfg: Dict[str, Any] = dict(
            species=list(species), rcut=float(rcut), rcut_smth=float(rcut_smth), sel=sel,
            neuron=list(neuron), axis_neuron=int(axis_neuron), fitting_neuron=list(fitting_neuron),
            type_one_side=bool(type_one_side), resnet_dt=bool(resnet_dt), seed=seed,
            fused=check_fused_option(fused), env_shift=bool(env_shift),
        )
        if env_stats not in ("edges", "slots"):
            raise ValueError(f"env_stats must be 'edges' or 'slots', got {env_stats!r}")
        if env_stats != "edges":  # absent otherwise: configs of models without it are unchanged
            self._cfg["env_stats"] = env_stats
        self.fused_step = check_step_option(fused_step)
        if self.fused_step is not None:
            self._cfg["fused_step"] = self.fused_step
        self.env_stats = env_stats
        self.fused = bool(fused)
        if seed is not None:
            torch.manual_seed(seed)
        self.n_species = n
        self.rcut = float(rcut)
        self.rcut_smth = float(rcut_smth)
        self.inv_nnei = 1.0 / float(sum(sel))
        self.sel: List[int] = [int(x) for x in sel]
        self.env_shift = bool(env_shift)
        self.m1 = int(neuron[-1])
        self.m2 = int(axis_neuron)
        self.type_one_side = bool(type_one_side)
        n_emb = n if type_one_side else n * n
        self.embedding = nn.ModuleList(ResMLP(1, neuron) for _ in range(n_emb))
        self.fitting = nn.ModuleList(
            ResMLP(self.m1 * self.m2, fitting_neuron, n_out=1, resnet_dt=resnet_dt) for _ in range(n)
        )
        # environment statistics per centre species: shift/scale of s for the embedding input,
        # scale of the (s, s x/r, s y/r, s z/r) rows; fitted by `fit_statistics`.
        self.register_buffer("s_avg", torch.zeros(n))
        self.register_buffer("s_std", torch.ones(n))
        self.register_buffer("r_std", torch.ones(n, 4))
        self.register_buffer("energy_bias", torch.zeros(n))

    def config(self) -> Dict[str, Any]:
        return dict(self._cfg)

    def set_energy_bias(self, bias: Tensor) -> None:
        self.energy_bias.copy_(bias.to(self.energy_bias))

    @torch.jit.unused
    def shift_energy_bias(self, delta: Tensor) -> Dict[str, Tensor]:
        """Add `delta` (per species) to the energy reference; returns {buffer name: delta} so that
        copies of the state (EMA) can be shifted identically."""
        with torch.no_grad():
            self.energy_bias.add_(delta.to(self.energy_bias))
        return {"energy_bias": delta.to(self.energy_bias)}

    @torch.jit.unused
    def fit_statistics(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> None:
        """Environment statistics per centre species from (a sample of) the training edges."""
        with torch.no_grad():
            r = edge_vec.pow(2).sum(1).sqrt()
            s = smooth_inverse(r, self.rcut_smth, self.rcut)
            rows = torch.cat([s[:, None], s[:, None] * edge_vec / r[:, None]], 1)
            centre = species[edge_index[0]]
            for t in range(self.n_species):
                m = centre == t
                if int(m.sum()) < 2:
                    continue
                if self.env_stats == "slots":
                    # DeePMD-kit's statistics: over all Σsel slots of every centre of species t, the empty
                    # ones counting as s = 0 and a zero row (deepmd/tf/descriptor/se_a.py, dstats)
                    n = float(int((species == t).sum()) * sum(self.sel))
                    st, at = s[m].double(), rows[m, 1:].double()
                    avg = st.sum() / n
                    self.s_avg[t] = avg
                    self.s_std[t] = (st.pow(2).sum() / n - avg * avg).clamp_min(0).sqrt().clamp_min(1e-2)
                    self.r_std[t, 0] = (st.pow(2).sum() / n).sqrt().clamp_min(1e-2)
                    a_avg = at.sum() / (3 * n)
                    self.r_std[t, 1:] = (at.pow(2).sum() / (3 * n) - a_avg * a_avg).clamp_min(0).sqrt().clamp_min(1e-2)
                    continue
                st = s[m]
                self.s_avg[t] = st.mean()
                self.s_std[t] = st.std().clamp_min(1e-2)
                self.r_std[t, 0] = st.pow(2).mean().sqrt().clamp_min(1e-2)
                self.r_std[t, 1:] = rows[m, 1:].pow(2).mean().sqrt().clamp_min(1e-2)

    def descriptor(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """D_i = (T_i T_i[:M2]ᵀ) with T_i = (1/Σsel) Σ_j G(s̃_ij)ᵀ R̃_ij, flattened to M1·M2.

        Edges are laid out per centre atom in one block per neighbour species (block width = this
        graph's largest count, never a cap). Each embedding net then runs on one contiguous block and
        T is one batched matmul per block; padding slots have R̃ = 0 and contribute nothing.
        """
        n_atoms = species.shape[0]
        n_sp = self.n_species
        ci = edge_index[0]
        tj = species[edge_index[1]]
        n_edges = edge_vec.shape[0]
        key = ci * n_sp + tj
        if n_edges > 1 and bool((key[1:] < key[:-1]).any()):
            order = torch.argsort(key, stable=True)
            key = key.index_select(0, order)
            ci = ci.index_select(0, order)
            tj = tj.index_select(0, order)
            edge_vec = edge_vec.index_select(0, order)
        counts = torch.bincount(key, minlength=n_atoms * n_sp)
        widths = counts.reshape(n_atoms, n_sp).max(0)[0] if n_atoms > 0 else torch.zeros(n_sp, dtype=torch.long)
        widths_l: List[int] = widths.tolist()
        offsets = torch.cumsum(widths, 0) - widths
        offs_l: List[int] = offsets.tolist()
        total = int(widths.sum())
        slot = torch.arange(n_edges, device=ci.device) - (torch.cumsum(counts, 0) - counts).index_select(0, key)
        flat = ci * total + offsets.index_select(0, tj) + slot

        ti_atom = species
        r = edge_vec.pow(2).sum(1).sqrt()
        s = smooth_inverse(r, self.rcut_smth, self.rcut)
        rows = torch.cat([s.unsqueeze(1), s.unsqueeze(1) * edge_vec / r.unsqueeze(1)], 1)
        s_pad = edge_vec.new_zeros(n_atoms * total).index_copy(0, flat, s).reshape(n_atoms, total)
        r_pad = edge_vec.new_zeros(n_atoms * total, 4).index_copy(0, flat, rows).reshape(n_atoms, total, 4)
        r_pad = r_pad / self.r_std[ti_atom].unsqueeze(1)
        s_in = ((s_pad - self.s_avg[ti_atom].unsqueeze(1)) / self.s_std[ti_atom].unsqueeze(1)).unsqueeze(2)
        # env_shift: DeePMD-kit's centred s-row, (s − avg)/std, on every one of `sel` slots, padding included
        # (it holds s̃0 = −avg/std). Here row 0 is the embedding input on the `width` slots of the block, and
        # the (sel − width) slots beyond it are added as one term below, so T does not depend on the
        # batch's widths; an edge leaving the cutoff turns into a padding slot continuously (s → 0).
        s0 = -self.s_avg[ti_atom] / self.s_std[ti_atom]  # [N]
        if self.env_shift:
            r_pad = torch.cat([s_in, r_pad[:, :, 1:]], 2)

        # T is kept transposed, [N, 4, M1]: the products then run with the wide M1 axis contiguous
        # (bmm with an inner size of 4 on the other side is several times slower, forward and backward)
        t = edge_vec.new_zeros(n_atoms, 4, self.m1)
        r_pad_t = r_pad.transpose(1, 2)
        for k, net in enumerate(self.embedding):
            nb = k if self.type_one_side else k % n_sp
            w = widths_l[nb]
            lo = offs_l[nb]
            if self.type_one_side:
                if w > 0:
                    x = s_in[:, lo: lo + w]
                    if torch.jit.is_scripting():  # resolved when scripting: exports run the module itself
                        g = net(x)  # [N, w, M1]
                    else:
                        g = self._embed_eager(k, x)
                    t = t + torch.bmm(r_pad_t[:, :, lo: lo + w], g)
                if self.env_shift:
                    x0 = s0.reshape(-1, 1, 1)
                    g0 = net(x0) if torch.jit.is_scripting() else self._embed_eager(k, x0)
                    t = t + self._padding_term(float(self.sel[nb] - w) * x0 * g0)
            else:
                idx = torch.nonzero(ti_atom == k // n_sp).squeeze(1)
                if idx.numel() > 0 and w > 0:
                    x = s_in.index_select(0, idx)[:, lo: lo + w]
                    if torch.jit.is_scripting():
                        g = net(x)
                    else:
                        g = self._embed_eager(k, x)
                    part = torch.bmm(r_pad_t.index_select(0, idx)[:, :, lo: lo + w], g)
                    t = t.index_add(0, idx, part)
                if idx.numel() > 0 and self.env_shift:
                    x0 = s0.index_select(0, idx).reshape(-1, 1, 1)
                    g0 = net(x0) if torch.jit.is_scripting() else self._embed_eager(k, x0)
                    t = t.index_add(0, idx, self._padding_term(float(self.sel[nb] - w) * x0 * g0))
        t = t * self.inv_nnei
        d = torch.bmm(t.transpose(1, 2), t[:, :, : self.m2])
        return d.reshape(n_atoms, self.m1 * self.m2)

    def _padding_term(self, row: Tensor) -> Tensor:
        """The (sel − width) padding slots of a neighbour block, (sel − width) · s̃0 · G(s̃0) [N, 1, M1], as
        row 0 of a T term [N, 4, M1] (the direction rows of padding are 0)."""
        return torch.cat([row, torch.zeros_like(row).expand(-1, 3, -1)], 1)

    @torch.jit.unused
    def _embed_eager(self, k: int, x: Tensor) -> Tensor:
        """G = embedding net k at x, [.., w, 1] → [.., w, M1]: through the fused op if `fused` (on a node
        grid of spacing `fused_step` if set)."""
        return fused_embedding(self.embedding[k], x, self.fused, self.fused_step)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        d = self.descriptor(species, edge_index, edge_vec)
        e = self.energy_bias[species].clone()
        # the fitting net is shifted by its value at D = 0, so an atom without neighbours has exactly
        # its species' energy bias (and the bias keeps its meaning as the isolated-atom reference);
        # with env_shift an isolated atom's descriptor is not 0 (its sel padding slots), so that is the reference
        for k, net in enumerate(self.fitting):
            idx = torch.nonzero(species == k).squeeze(1)
            if idx.numel() > 0:
                ref = self._isolated_descriptor(k, edge_vec) if self.env_shift else d.new_zeros(1, d.shape[1])
                e.index_add_(0, idx, (net(d.index_select(0, idx)) - net(ref)).squeeze(1))
        return e

    def _isolated_descriptor(self, k: int, like: Tensor) -> Tensor:
        """The descriptor of an atom of species k without neighbours, [1, M1·M2]."""
        species = torch.full((1,), k, dtype=torch.long, device=like.device)
        no_edges = torch.zeros((2, 0), dtype=torch.long, device=like.device)
        return self.descriptor(species, no_edges, like.new_zeros(0, 3))

    @torch.jit.export
    def grade_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom MaxVol rows (extrapolation grade, see `mlip.active.grade`): the derivatives of E_i
        with respect to the linear parameters of the fitting nets, i.e. per species block s
        [δ(t_i, s), δ(t_i, s) h_s(D_i)] with h_s the last hidden layer of fitting net s;
        [N, n_species * (1 + fitting_neuron[-1])], species-major blocks."""
        d = self.descriptor(species, edge_index, edge_vec)
        n_atoms = species.shape[0]
        width = self.fitting[0].out.in_features
        rows = d.new_zeros(n_atoms, self.n_species, 1 + width)
        for k, net in enumerate(self.fitting):
            idx = torch.nonzero(species == k).squeeze(1)
            if idx.numel() > 0:
                h = net.hidden(d.index_select(0, idx))
                blk = torch.cat([torch.ones_like(h[:, :1]), h], 1)
                rows[idx, k] = blk
        return rows.reshape(n_atoms, self.n_species * (1 + width))
