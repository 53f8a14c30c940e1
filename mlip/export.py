"""TorchScript export: one file = model + derivative code + metadata (+ an optional grade matrix).

`ExportedModel` wraps any `AtomicModel` with the edge-gradient → forces/virials code of
`mlip.models.base.forces_virials_from_edges`, so the TorchScript graph the C++ engine runs for the ASE
calculator and the LAMMPS pair_style is the same function training differentiates. (The engine's
native MTP and Deep Potential kernels compute the same numbers without TorchScript, from the
parameters stored in this file; the TorchScript graph stays the reference they are checked against
and the path for every other family.) Metadata is stored twice on purpose: as scripted attributes
(cheap to read from C++ without a JSON parser) and as the extra file `mlip_metadata.json` (complete,
human-readable, family-specific data; read it with `read_metadata`).

Message passing: a model that provides the layer split (docs/CONTRACT.md, "Layer split") is wrapped by
`ExportedLayeredModel`, which exposes it as scripted methods; the engine then evaluates it block by
block on a one-cutoff graph, its caller (LAMMPS) exchanging the ghost features between blocks.

Extrapolation grade: the export takes a plain grade matrix G [n_features, r] (float64) and its mode
("nbh": γ per atom from its own feature row; "cfg": γ of the configuration from the sum of the local
atoms' rows) and stores it as the buffer `grade_matrix` behind the scripted `grade` method, with
`has_grade` and `grade_mode` attributes; the JSON that describes how G was built (MaxVol rows,
projection, sources: `mlip.active.grade`) goes to the metadata under `active_set.<mode>`. This module
knows nothing about MaxVol.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from mlip import __version__
from mlip.io.export_metadata import METADATA_FILE, read_metadata
from mlip.io.safe_write import atomic_write_buffered
from mlip.models.base import AtomicModel, forces_virials_from_edges, model_dtype

__all__ = ["FORMAT_VERSION", "GRADE_MODES", "LAYER_METHODS", "METADATA_FILE", "ExportedLayeredModel", "ExportedModel", "export_model", "model_metadata",
           "read_metadata"]

FORMAT_VERSION = 1
GRADE_MODES = ("nbh", "cfg")
# what a message-passing model provides for the layer split (ExportedLayeredModel)
LAYER_METHODS = ("feature_widths", "layer_embed", "layer_forward", "layer_vjp", "layer_readout",
                 "grade_rows_from_features")


class ExportedModel(nn.Module):
    """The deployable module (see docs/CONTRACT.md, section Export)."""

    def __init__(self, model: AtomicModel, dtype: str, grade_matrix: Optional[Tensor] = None,
                 grade_mode: str = "nbh") -> None:
        super().__init__()
        self.model = model
        self.species: List[str] = list(model.species)
        self.cutoff: float = float(model.cutoff)
        self.interaction_range: float = float(model.interaction_range)
        self.family: str = str(model.family)
        self.units: str = "metal"
        self.dtype: str = dtype
        self.format_version: int = FORMAT_VERSION
        self.mlip_version: str = __version__
        # extrapolation grade (see `grade`): G [n_features, r], float64 whatever the model dtype
        # (γ involves ill-conditioned solves); [0, 0] = no active set
        gm = torch.zeros(0, 0, dtype=torch.float64) if grade_matrix is None else grade_matrix.to(torch.float64)
        self.register_buffer("grade_matrix", gm.contiguous())
        self.has_grade: bool = int(gm.shape[1]) > 0
        self.grade_mode: str = str(grade_mode)

    def atom_energies(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        return self.model(species, edge_index, edge_vec)

    def forward(
        self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int, atom_virial: bool
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        n_atoms = species.shape[0]
        vec = edge_vec.detach().requires_grad_(True)
        atom_energy = self.atom_energies(species, edge_index, vec, n_local)
        total = atom_energy[:n_local].sum()
        grad: Optional[Tensor] = None
        if total.requires_grad:
            grad = torch.autograd.grad([total], [vec], allow_unused=True)[0]
        if grad is None:
            grad = torch.zeros_like(vec)
        forces, edge_virial = forces_virials_from_edges(grad, edge_index, vec.detach(), n_atoms)
        virial = edge_virial.sum(0)
        if atom_virial:
            half = 0.5 * edge_virial.reshape(-1, 9)
            av = torch.zeros((n_atoms, 9), dtype=vec.dtype, device=vec.device)
            av.index_add_(0, edge_index[0], half)
            av.index_add_(0, edge_index[1], half)
        else:
            av = torch.zeros((0, 9), dtype=vec.dtype, device=vec.device)
        return atom_energy.detach(), forces.detach(), virial.detach(), av.detach()

    def grade_rows(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        return self.model.grade_features(species, edge_index, edge_vec)[:n_local]

    @torch.jit.export
    def grade(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        """Extrapolation grade of the first n_local atoms, [n_local] float64; an empty tensor when the
        export has no active set. nbh: γ_i = max_k |(b_i G)_k| with b_i the family's `grade_features`
        row of atom i; cfg: every entry is the configuration's γ = max_k |((Σ_i b_i) G)_k| over the
        local atoms (with several LAMMPS ranks: each rank's sub-domain). γ ≤ 1 interpolation, > 1
        extrapolation (see docs/CONTRACT.md)."""
        if self.grade_matrix.shape[1] == 0:
            return torch.zeros(0, dtype=torch.float64, device=edge_vec.device)
        return self.gamma_of_rows(self.grade_rows(species, edge_index, edge_vec.detach(), n_local).detach())

    def gamma_of_rows(self, rows: Tensor) -> Tensor:
        """γ [n] of n feature rows (see `grade`); empty without an active set or rows."""
        g = self.grade_matrix
        if g.shape[1] == 0 or rows.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float64, device=rows.device)
        if self.grade_mode == "cfg":
            total = rows.to(g.dtype).sum(0, keepdim=True)
            gamma = torch.matmul(total, g).abs().max(dim=1)[0]
            return gamma.expand(rows.shape[0]).contiguous()
        return torch.matmul(rows.to(g.dtype), g).abs().max(dim=1)[0]


class ExportedMessagePassingModel(ExportedModel):
    """For models whose `forward` takes `n_local`: they skip the work that cannot reach the local
    atoms' energies (a LAMMPS ghost shell is mostly such work)."""

    def atom_energies(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        return self.model(species, edge_index, edge_vec, n_local)

    def grade_rows(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        n = species.shape[0]
        rows = self.model.grade_features(species, edge_index, edge_vec, n_local if n_local < n else -1)
        return rows[:n_local]


class ExportedLayeredModel(ExportedMessagePassingModel):
    """A message-passing model that also exposes its layer split (docs/CONTRACT.md, "Layer split"):
    the engine evaluates it block by block on a one-cutoff graph and lets the caller exchange the
    node features of ghost atoms between blocks (LAMMPS forward/reverse communication), instead of
    recomputing a ghost shell num_layers × cutoff deep. Every step is a plain function of tensors
    with an explicit vector-Jacobian product, so the split does not depend on TorchScript."""

    def __init__(self, model: AtomicModel, dtype: str, grade_matrix: Optional[Tensor] = None,
                 grade_mode: str = "nbh") -> None:
        super().__init__(model, dtype, grade_matrix, grade_mode)
        self.layer_widths: List[int] = [int(w) for w in model.feature_widths]

    @torch.jit.export
    def layer_embed(self, species: Tensor, dtype: torch.dtype) -> Tensor:
        return self.model.layer_embed(species, dtype)

    @torch.jit.export
    def layer_forward(self, k: int, h: Tensor, species: Tensor, edge_index: Tensor, edge_vec: Tensor,
                      n_centres: int, chunk: int) -> Tensor:
        return self.model.layer_forward(k, h, species, edge_index, edge_vec, n_centres, chunk)

    @torch.jit.export
    def layer_vjp(self, k: int, h: Tensor, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centres: int,
                  chunk: int, grad_out: Tensor, need_h: bool) -> Tuple[Tensor, Tensor]:
        return self.model.layer_vjp(k, h, species, edge_index, edge_vec, n_centres, chunk, grad_out, need_h)

    @torch.jit.export
    def layer_readout(self, h: Tensor, species: Tensor) -> Tuple[Tensor, Tensor]:
        return self.model.layer_readout(h, species)

    @torch.jit.export
    def layer_pair(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centres: int) -> Tuple[Tensor, Tensor]:
        return self.model.layer_pair(species, edge_index, edge_vec, n_centres)

    @torch.jit.export
    def layer_grade(self, h: Tensor, species: Tensor) -> Tensor:
        """γ of the atoms whose last features are h (the `grade` of the layer path)."""
        if self.grade_matrix.shape[1] == 0:
            return torch.zeros(0, dtype=torch.float64, device=h.device)
        return self.gamma_of_rows(self.model.grade_rows_from_features(h, species).detach())


class _ExportedModelNoGrade(ExportedModel):
    """For a family without `grade_features` (no extrapolation grade possible)."""

    def grade_rows(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        raise RuntimeError("this model family has no grade features")


class _ExportedMessagePassingModelNoGrade(ExportedMessagePassingModel):
    def grade_rows(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_local: int) -> Tensor:
        raise RuntimeError("this model family has no grade features")


def wrapper_class(model: AtomicModel) -> type:
    import inspect

    params = inspect.signature(model.forward).parameters
    graded = hasattr(model, "grade_features")
    if "n_local" in params:
        if graded and all(hasattr(model, m) for m in LAYER_METHODS):
            return ExportedLayeredModel
        return ExportedMessagePassingModel if graded else _ExportedMessagePassingModelNoGrade
    return ExportedModel if graded else _ExportedModelNoGrade


def model_metadata(model: AtomicModel, dtype: str) -> Dict[str, Any]:
    """What an export says of itself (`mlip info`, the engine, LAMMPS): family, species, cutoffs,
    units, dtype, the constructor config, the number of parameters and, for a model that came from a
    training run, where it stopped and what data it saw (`training`)."""
    training = getattr(model, "training_info", None)
    return {
        "format_version": FORMAT_VERSION,
        "mlip_version": __version__,
        "family": model.family,
        "species": list(model.species),
        "cutoff": float(model.cutoff),
        "interaction_range": float(model.interaction_range),
        "units": "metal",
        "dtype": dtype,
        "config": model.config(),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        **({"training": training} if training else {}),
        **model.extra_metadata(),
    }


def _grade_width(model: AtomicModel) -> int:
    """Number of columns of the model's grade-feature rows (one isolated atom is enough)."""
    species = torch.zeros(1, dtype=torch.long)
    edges = torch.zeros(2, 0, dtype=torch.long)
    vec = torch.zeros(0, 3, dtype=model_dtype(model))
    with torch.no_grad():
        return int(model.grade_features(species, edges, vec).shape[1])


def export_model(
    model: AtomicModel, path: str, dtype: str = "float64", extra: Optional[Dict[str, Any]] = None,
    grade_matrix: Optional[Union[Tensor, np.ndarray]] = None, grade_mode: str = "nbh",
    grade_meta: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Script `model` (a copy, in `dtype`) with its derivative code and write it to `path`.

    `grade_matrix` G [n_features, r] (with `grade_mode` "nbh" | "cfg") becomes the buffer behind the
    export's `grade` method; `grade_meta` (JSON: how G was built, e.g. `ActiveSet.to_dict()` from
    `mlip.active.grade.build_active_set`) is stored in the metadata under active_set.<mode>.
    Returns the metadata.

    The file is written by `mlip.io.safe_write` (serialised in memory, then a temporary file renamed
    over `path`): a failed or interrupted export never leaves a half-written model or a temporary
    file, a previous good model at `path` is kept, and the failure is one `WriteError` line
    ("cannot write model.pt: No space left on device").
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if grade_mode not in GRADE_MODES:
        raise ValueError(f"grade mode must be one of {GRADE_MODES}, got {grade_mode!r}")
    import copy

    gm: Optional[Tensor] = None
    if grade_matrix is not None:
        if not hasattr(model, "grade_features"):
            raise ValueError(f"family '{model.family}' has no grade features: it cannot carry a grade matrix")
        gm = torch.as_tensor(grade_matrix).detach().to(torch.float64).cpu()
        width = _grade_width(model)
        if gm.dim() != 2 or gm.shape[0] != width or gm.shape[1] == 0:
            raise ValueError(f"grade matrix must be [{width}, r > 0] for this model's grade features, "
                             f"got {list(gm.shape)}")
    m = copy.deepcopy(model).to(getattr(torch, dtype)).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    meta = model_metadata(m, dtype)
    if gm is not None:
        meta["active_set"] = {grade_mode: {**(grade_meta or {}), "mode": grade_mode}}
    meta["has_grade"] = gm is not None
    if extra:
        meta.update(extra)
    scripted = torch.jit.script(wrapper_class(m)(m, dtype, gm, grade_mode))
    extra_files = {METADATA_FILE: json.dumps(meta, indent=1)}
    atomic_write_buffered(path, lambda buf: torch.jit.save(scripted, buf, _extra_files=extra_files))
    return meta
