"""The NequIP-style model (family "nequip"): the AtomicModel that wires the blocks together.

Architecture (after Batzner et al., Nat. Commun. 13, 2453 (2022)), behind the common contract
`forward(species, edge_index, edge_vec) -> atom_energy[N]`, evaluated as embed → layers → readout:

* edge features, shared by all layers and computed once per forward: spherical harmonics Y(r̂) up
  to `l_max` (e3nn, "component" normalisation), the coupling tensors T = Y·C, and the enveloped
  Bessel basis of |r| (`radial.py`), all in the per-centre slot layout of `convolution.py`;
* embedding: a learned vector of `num_features` scalars (0e) per element;
* `num_layers` interaction blocks (`blocks.py`), with irreps pruned to what can still reach the
  energy (`irreps.py`);
* readout: scalars → `head_hidden` SiLU features φ_i (the "last invariant node features", see
  `invariant_features`) → linear → per-species scale and shift: E_i = scale_s (φ_i · w) + shift_s.
  E is linear in (w, shift): `linear_design` (`linear.py`) gives the rows of an exact solve.

The readout's parameters (`head_w1`, `head_b1`, `head_w2`, `energy_scale`, `energy_shift`) and the
`sh`, `basis`, `embedding`, `blocks` submodules sit directly on the model: those names are the
state_dict keys of existing checkpoints. Everything scripts with TorchScript.

Message passing: `interaction_range = num_layers * cutoff`. Two ways to evaluate a LAMMPS sub-domain:
* `forward(..., n_local)` on a ghost shell that deep evaluates only what the first n_local atoms'
  energies depend on (`pruning.py`);
* the layer split (`layer_embed`, `layer_forward`, `layer_vjp`, `layer_readout`; docs/CONTRACT.md,
  "Layer split") on a one-cutoff shell, the caller exchanging ghost features between blocks: what
  the engine and `pair_style mlip` use (each edge once, memory linear in the atoms).
"""
import math
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from e3nn import o3

from mlip.models.base import AtomicModel
from mlip.models.nequip.activations import second_moment_constant
from mlip.models.nequip.blocks import InteractionBlock
from mlip.models.nequip.convolution import CGBank, coupling_tensors, edge_slots, slot_senders, slot_vectors
from mlip.models.nequip.irreps import hidden_irreps, needed_irreps, sh_irreps
from mlip.models.nequip.baseline import Baseline, baseline_spec
from mlip.models.nequip.pair import PairTerm
from mlip.models.nequip.pruning import prune_to_local
from mlip.models.nequip.radial import BesselBasis


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
        pair_basis, pair_r_min: an explicit learned two-body energy (`pair.py`) of `pair_basis`
            Chebyshev functions on [pair_r_min, cutoff]; 0 (default) = none.
        baseline: a frozen MTP whose energies are added (Δ-learning, `baseline.py`): the path of its
            mlip export or MLIP-2 `.mtp` file, or the config entry a model stores; None (default) = none.
    """

    family = "nequip"
    # class-level, so TorchScript knows the type even when the list is empty (l_max = 0 or one layer)
    cg_meta: List[Tuple[int, int, int, int]]

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
        pair_basis: int = 0,
        pair_r_min: float = 0.0,
        baseline: Optional[Union[str, Dict[str, Any]]] = None,
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
        if int(pair_basis) > 0:  # absent otherwise: configs (and exports) of models without it are unchanged
            self._config.update(pair_basis=int(pair_basis), pair_r_min=float(pair_r_min))
        base_entry = None if baseline is None else baseline_spec(baseline, list(species), float(cutoff))
        if base_entry is not None:  # like the pair term: absent from configs of models without one
            self._config["baseline"] = {k: v for k, v in base_entry.items() if not k.startswith("_")}
        n_species = len(species)
        nf = int(num_features)
        self.n_species = n_species
        self.num_layers = int(num_layers)
        self.interaction_range = float(num_layers) * float(cutoff)
        self.inv_sqrt_nn: float = 1.0 if avg_num_neighbors is None else 1.0 / math.sqrt(avg_num_neighbors)

        # construction order = parameter initialisation order (kept: a seed gives the same model)
        self.irreps_sh = sh_irreps(int(l_max), bool(parity))
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.sh_dims: List[int] = [ir.dim for _, ir in self.irreps_sh]
        self.basis = BesselBasis(cutoff, int(num_basis), int(envelope_p), bool(trainable_basis))
        self.embedding = nn.Embedding(n_species, nf)

        targets = needed_irreps(hidden_irreps(nf, int(l_max), bool(parity)), self.irreps_sh, int(num_layers))
        targets[-1] = o3.Irreps(f"{nf}x0e")
        irreps = o3.Irreps(f"{nf}x0e")
        blocks = []
        bank = CGBank()
        self.irreps_layers: List[str] = []  # output irreps of every block (for tests/analysis)
        for k in range(int(num_layers)):
            blk = InteractionBlock(irreps, targets[k], self.irreps_sh, n_species, int(num_basis),
                                   int(radial_hidden), int(radial_layers), bool(resnet), bank)
            blocks.append(blk)
            irreps = blk.irreps_out
            self.irreps_layers.append(str(irreps))
        self.blocks = nn.ModuleList(blocks)
        # node feature width before every block and after the last: [num_features, dim_1, ..., dim_L]
        self.feature_widths: List[int] = [nf] + [blk.irreps_out.dim for blk in blocks]
        cg_bank, cg_meta = bank.matrices()
        # float64 whatever the default dtype (a float32-rounded C is not exactly equivariant in
        # float64); cast to the input dtype where used
        self.register_buffer("cg_bank", cg_bank, persistent=False)
        self.cg_meta: List[Tuple[int, int, int, int]] = cg_meta

        # readout (parameters on the model itself: their names are checkpoint keys)
        self.head_w1 = nn.Parameter(torch.randn(nf, int(head_hidden)))
        self.head_b1 = nn.Parameter(torch.zeros(int(head_hidden)))
        self.head_w2 = nn.Parameter(torch.randn(int(head_hidden), 1))
        self.head_s1: float = 1.0 / math.sqrt(nf)
        self.head_s2: float = 1.0 / math.sqrt(int(head_hidden))
        self.silu_cst: float = second_moment_constant("silu")
        self.energy_scale = nn.Parameter(torch.full((n_species,), float(energy_scale)))
        self.register_buffer("energy_shift", torch.zeros(n_species))
        self.pair = PairTerm(n_species, float(cutoff), int(pair_basis), float(pair_r_min), int(envelope_p))
        # a frozen MTP under the network (Δ-learning, `baseline.py`); None without one
        self.baseline = None if base_entry is None else Baseline(base_entry, float(cutoff))
        # set by the trainer while the labels hold E − E_baseline (baseline.py); False in every export
        self.baseline_in_labels = False

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

    # ---- computation: edge features, embed → layers → readout --------------------------------------
    def edge_features(
        self, edge_index: Tensor, edge_vec: Tensor, n_keep: List[int]
    ) -> Tuple[List[Tensor], List[Tensor], Tensor, Tensor, int]:
        """The slot tensors every layer shares, for the first n_keep[0] centres (S = n_keep[0] n_max):
        Y_l [S, 2l+1] per l, T [<= S, d1 d3] per CG bank entry, basis [S, num_basis], slot_src [S], n_max.
        T is only used from block 1 on, which updates the first n_keep[1] centres."""
        return self._slot_tensors(edge_index, edge_vec, n_keep[0], n_keep[1] if self.num_layers > 1 else 0)

    def _slot_tensors(
        self, edge_index: Tensor, edge_vec: Tensor, n_centres: int, n_t_centres: int
    ) -> Tuple[List[Tensor], List[Tensor], Tensor, Tensor, int]:
        """Slot tensors of the first n_centres centres (see `edge_features`), T for the first n_t_centres."""
        slot_edge, n_max = edge_slots(n_centres, edge_index)
        vec = slot_vectors(edge_vec, slot_edge, self.cutoff)
        slot_src = slot_senders(edge_index, slot_edge)
        r = torch.linalg.norm(vec, dim=-1)
        sh = torch.split(self.sh(vec), self.sh_dims, dim=1)
        t_list = coupling_tensors(sh, self.cg_bank.to(edge_vec.dtype), self.cg_meta, n_t_centres * n_max)
        basis = self.basis(r)
        return sh, t_list, basis, slot_src, n_max

    def embed(self, species: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """Initial node features h0 [N, num_features] (0e) and the one-hot species [N, n_species]
        that the self-interactions use."""
        onehot = torch.nn.functional.one_hot(species, self.n_species).to(dtype)
        h = self.embedding(species).to(dtype)
        return h, onehot

    def interactions(
        self, h: Tensor, onehot: Tensor, sh: List[Tensor], t_list: List[Tensor], basis: Tensor, slot_src: Tensor,
        n_keep: List[int], n_max: int, keep_all: bool,
    ) -> List[Tensor]:
        """Run the blocks on h0 [N, num_features]; block k updates the first n_keep[k] atoms and sees
        the matching prefix of the slot tensors. Returns the features after every block (keep_all)
        or after the last, [n_keep[-1], irreps_layers[-1].dim]."""
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

    def readout_features(self, h: Tensor) -> Tensor:
        """φ [n, head_hidden] = SiLU(h W1 / sqrt(num_features) + b1) from the last scalars h [n, num_features]."""
        return torch.nn.functional.silu(torch.matmul(h, self.head_w1 * self.head_s1) + self.head_b1) * self.silu_cst

    def readout(self, h: Tensor, species: Tensor) -> Tensor:
        """E_i [n] = scale_s (φ_i · w) + shift_s from h [n, num_features] and species [n]."""
        e = torch.matmul(self.readout_features(h), self.head_w2 * self.head_s2).squeeze(-1)
        return e * self.energy_scale.index_select(0, species) + self.energy_shift.index_select(0, species)

    def _run(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, keep_all: bool, n_local: int = -1) -> List[Tensor]:
        """Node features after the blocks (all of them if keep_all, else the last).

        With 0 <= n_local < N (a LAMMPS graph: locals first, then ghosts out to interaction_range),
        block k only updates atoms within num_layers - 1 - k edges of a local one — the others
        cannot influence the local energies — and the returned features cover the first
        n_local atoms only (the exact same values as without pruning)."""
        species, edge_index, edge_vec, n_keep = prune_to_local(species, edge_index, edge_vec, n_local, self.num_layers)
        sh, t_list, basis, slot_src, n_max = self.edge_features(edge_index, edge_vec, n_keep)
        h, onehot = self.embed(species, edge_vec.dtype)
        return self.interactions(h, onehot, sh, t_list, basis, slot_src, n_keep, n_max, keep_all)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int = -1) -> Tensor:
        """Per-atom energies [N]. Optional n_local (0 <= n_local < N, locals first): only the local
        energies are computed (ghost entries are 0) and only the atoms that can influence them are
        updated, layer by layer — identical local energies and gradients, far less work on a
        LAMMPS ghost shell num_layers * cutoff deep."""
        h = self._run(species, edge_index, edge_vec, False, n_local)[-1]
        n = h.shape[0]
        e = self.readout(h, species[:n] if n < species.shape[0] else species)
        if self.pair.enabled:
            e = e + self.pair(species, edge_index, edge_vec, n)
        if self.baseline is not None and not self.baseline_in_labels:
            e = e + self.baseline(species, edge_index, edge_vec, n)
        if n < species.shape[0]:
            e = torch.cat([e, torch.zeros(species.shape[0] - n, dtype=e.dtype, device=e.device)])
        return e

    # ---- layer by layer (the engine's exchange path; see docs/CONTRACT.md, "Layer split") -------
    # The same numbers as forward(), cut at the node features between blocks, so that a caller can
    # overwrite the rows of ghost atoms with their owners' values after every block (LAMMPS forward
    # communication) and sum the gradients of ghost rows onto their owners on the way back (reverse
    # communication). Centres are the first n_centres atoms, edges sorted by centre and centred on
    # them only (a one-cutoff graph). Centres are processed in chunks of `chunk` atoms and the
    # backward pass recomputes one block for one chunk at a time, so the autograd intermediates
    # held at once are those of one chunk, not of the whole graph.

    def _chunk_slots(
        self, edge_index: Tensor, vec: Tensor, c0: int, c1: int, e0: int, e1: int, with_t: bool
    ) -> Tuple[List[Tensor], List[Tensor], Tensor, Tensor, int, Tensor]:
        """Slot tensors (as `edge_features`) of centres [c0, c1) from their edges [e0, e1):
        edge_index is the whole graph's, vec [e1 - e0, 3] those edges' vectors. The senders are
        renumbered 0..n_u-1 in the returned `senders` [n_u] (the atoms whose features the chunk
        reads), so that the chunk's work and memory do not grow with the size of the graph."""
        ei = edge_index[:, e0:e1]
        senders, src = torch.unique(ei[1], sorted=True, return_inverse=True)
        ei = torch.stack([ei[0] - c0, src])
        sh, t_list, basis, slot_src, n_max = self._slot_tensors(ei, vec, c1 - c0, c1 - c0 if with_t else 0)
        return sh, t_list, basis, slot_src, n_max, senders

    def _edge_offsets(self, edge_index: Tensor, n_centres: int) -> List[int]:
        """ptr[c] = first edge of centre c (ptr[n_centres] = E); edges must be sorted by centre."""
        counts = torch.bincount(edge_index[0], minlength=n_centres)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), torch.cumsum(counts, 0)])
        return ptr.tolist()

    @torch.jit.export
    def layer_embed(self, species: Tensor, dtype: torch.dtype) -> Tensor:
        """Features before block 0, h0 [N, num_features] (species only: ghosts need no exchange)."""
        return self.embedding(species).to(dtype)

    @torch.jit.export
    def layer_forward(
        self, k: int, h: Tensor, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centres: int, chunk: int
    ) -> Tensor:
        """Block k on the first n_centres atoms: h [N, feature_widths[k]] (every sender's features)
        -> [n_centres, feature_widths[k + 1]]. Run it without autograd (the backward recomputes)."""
        onehot = torch.nn.functional.one_hot(species[:n_centres], self.n_species).to(h.dtype)
        ptr = self._edge_offsets(edge_index, n_centres)
        outs: List[Tensor] = []
        for i, blk in enumerate(self.blocks):
            if i == k:
                x = blk.message_input(h)
                for c0 in range(0, n_centres, chunk):
                    c1 = min(c0 + chunk, n_centres)
                    e0, e1 = ptr[c0], ptr[c1]
                    sh, t_list, basis, slot_src, n_max, senders = self._chunk_slots(
                        edge_index, edge_vec[e0:e1], c0, c1, e0, e1, k > 0)
                    outs.append(blk.update(x.index_select(0, senders), h[c0:c1], onehot[c0:c1], sh, t_list, basis,
                                           slot_src, c1 - c0, n_max, self.inv_sqrt_nn))
        if len(outs) == 0:
            return torch.zeros((0, self.feature_widths[k + 1]), dtype=h.dtype, device=h.device)
        return torch.cat(outs, 0)

    @torch.jit.export
    def layer_vjp(
        self, k: int, h: Tensor, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centres: int, chunk: int,
        grad_out: Tensor, need_h: bool,
    ) -> Tuple[Tensor, Tensor]:
        """Vector-Jacobian product of `layer_forward` (recomputed chunk by chunk, with autograd):
        grad_out [n_centres, feature_widths[k + 1]] -> (grad_h [N, feature_widths[k]] (zeros unless
        need_h; rows of every sender, ghosts included), grad_edge_vec [E, 3])."""
        onehot = torch.nn.functional.one_hot(species[:n_centres], self.n_species).to(h.dtype)
        ptr = self._edge_offsets(edge_index, n_centres)
        h_leaf = h.detach().requires_grad_(need_h)
        g_h = torch.zeros_like(h)
        g_vec = torch.zeros_like(edge_vec)
        for i, blk in enumerate(self.blocks):
            if i == k:
                x = blk.message_input(h_leaf)
                g_x = torch.zeros_like(x)
                for c0 in range(0, n_centres, chunk):
                    c1 = min(c0 + chunk, n_centres)
                    e0, e1 = ptr[c0], ptr[c1]
                    vec = edge_vec[e0:e1].detach().requires_grad_(True)
                    h_c = h[c0:c1].detach().requires_grad_(need_h)
                    sh, t_list, basis, slot_src, n_max, senders = self._chunk_slots(edge_index, vec, c0, c1, e0, e1,
                                                                                    k > 0)
                    x_s = x.detach().index_select(0, senders).requires_grad_(need_h)
                    y = blk.update(x_s, h_c, onehot[c0:c1], sh, t_list, basis, slot_src, c1 - c0, n_max,
                                   self.inv_sqrt_nn)
                    go: List[Optional[Tensor]] = [grad_out[c0:c1]]
                    if need_h:
                        gs = torch.autograd.grad([y], [vec, x_s, h_c], go, allow_unused=True)
                    else:
                        gs = torch.autograd.grad([y], [vec], go, allow_unused=True)
                    gv = gs[0]
                    if gv is not None:
                        g_vec[e0:e1] = gv
                    if need_h:
                        gx = gs[1]
                        if gx is not None:
                            g_x.index_add_(0, senders, gx)
                        ghc = gs[2]
                        if ghc is not None:
                            g_h[c0:c1] += ghc
                if need_h:
                    gxo: List[Optional[Tensor]] = [g_x]
                    gh = torch.autograd.grad([x], [h_leaf], gxo, allow_unused=True)[0]
                    if gh is not None:
                        g_h = g_h + gh
        return g_h, g_vec

    @torch.jit.export
    def layer_readout(self, h: Tensor, species: Tensor) -> Tuple[Tensor, Tensor]:
        """(E_i [n], dΣE/dh [n, feature_widths[-1]]) of n atoms from their last features h."""
        h_leaf = h.detach().requires_grad_(True)
        e = self.readout(h_leaf, species)
        g = torch.autograd.grad([e.sum()], [h_leaf], allow_unused=True)[0]
        if g is None:
            g = torch.zeros_like(h)
        return e.detach(), g

    @torch.jit.export
    def layer_pair(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centres: int) -> Tuple[Tensor, Tensor]:
        """(E_i^local [n_centres], ∂ΣE^local/∂edge_vec [E, 3]) of the terms beside the blocks that need
        no exchange: the two-body term (`pair.py`) plus the baseline (`baseline.py`); zeros without them."""
        if not self.pair.enabled and self.baseline is None:
            return (torch.zeros(n_centres, dtype=edge_vec.dtype, device=edge_vec.device), torch.zeros_like(edge_vec))
        vec = edge_vec.detach().requires_grad_(True)
        e = self.pair(species, edge_index, vec, n_centres)
        if self.baseline is not None:
            e = e + self.baseline(species, edge_index, vec, n_centres)
        g = torch.autograd.grad([e.sum()], [vec], allow_unused=True)[0]
        if g is None:
            g = torch.zeros_like(edge_vec)
        return e.detach(), g

    @torch.jit.export
    def grade_rows_from_features(self, h: Tensor, species: Tensor) -> Tensor:
        """MaxVol rows (see `grade_features`) of n atoms from their last features h [n, ...]."""
        phi = self.readout_features(h) * self.energy_scale.index_select(0, species).to(h.dtype).unsqueeze(1)
        onehot = torch.nn.functional.one_hot(species, self.n_species).to(h.dtype)
        return torch.cat([onehot, phi], 1)

    @torch.jit.export
    def invariant_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Per-atom last invariant features φ_i [N, head_hidden]: the atomic energy is linear in them,
        E_i = scale_s (φ_i · w) + shift_s (what a MaxVol extrapolation grade is built on)."""
        return self.readout_features(self._run(species, edge_index, edge_vec, False)[-1])

    @torch.jit.export
    def grade_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int = -1) -> Tensor:
        """Per-atom MaxVol rows (extrapolation grade, see `mlip.active.grade`): the derivatives of E_i
        with respect to the readout's linear parameters (shift_s, w), [onehot(t_i), scale_{t_i} φ_i],
        [n, n_species + head_hidden]; n = n_local with 0 <= n_local < N (pruned evaluation), else N."""
        h = self._run(species, edge_index, edge_vec, False, n_local)[-1]
        n = h.shape[0]
        return self.grade_rows_from_features(h, species[:n] if n < species.shape[0] else species)

    @torch.jit.export
    def scalar_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> Tensor:
        """Scalars output by the last interaction block [N, num_features]."""
        return self._run(species, edge_index, edge_vec, False)[-1]

    @torch.jit.unused
    def node_features(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor) -> List[Tensor]:
        """Node features after every block (flat e3nn layout, irreps `self.irreps_layers[k]`)."""
        return self._run(species, edge_index, edge_vec, True)

    # ---- linear part (`linear.py`): what `mlip.train.refit` solves exactly ------------------------
    @torch.jit.ignore
    def linear_parameters(self) -> List[str]:
        """The parameters the energy is linear in for fixed other weights: head_w2, energy_shift."""
        from mlip.models.nequip.linear import linear_parameters

        return linear_parameters()

    @torch.jit.ignore
    def linear_design(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, node_frame: Tensor,
                      n_frames: int, need_virial: bool = False):
        """Energies, forces and virials as linear maps of `linear_parameters` (`linear.py`)."""
        from mlip.models.nequip.linear import linear_design

        return linear_design(self, species, edge_index, edge_vec, node_frame, n_frames, need_virial)


__all__ = ["NequIP"]
