"""TorchScript export: one file = model + derivative code + metadata.

`ExportedModel` wraps any `AtomicModel` and adds the edge-gradient → forces/virials code, so the C++
engine (ASE calculator and LAMMPS pair_style alike) only scatters nothing and copies arrays: every
front-end runs the very same TorchScript graph. Metadata is stored twice on purpose: as scripted
attributes (cheap to read from C++ without a JSON parser) and as the extra file `mlip_metadata.json`
(complete, human-readable, family-specific data such as MaxVol active sets).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mlip import __version__
from mlip.models.base import AtomicModel

FORMAT_VERSION = 1
METADATA_FILE = "mlip_metadata.json"


def forces_virials_from_edges(
    edge_grad: Tensor, edge_index: Tensor, edge_vec: Tensor, n_atoms: int
) -> Tuple[Tensor, Tensor]:
    """F_i += g_e, F_j -= g_e; per-edge virial −r_e ⊗ g_e (see docs/CONTRACT.md)."""
    forces = torch.zeros((n_atoms, 3), dtype=edge_grad.dtype, device=edge_grad.device)
    forces.index_add_(0, edge_index[0], edge_grad)
    forces.index_add_(0, edge_index[1], -edge_grad)
    edge_virial = -(edge_vec.unsqueeze(2) * edge_grad.unsqueeze(1))
    return forces, edge_virial


class ExportedModel(nn.Module):
    """The deployable module (see docs/CONTRACT.md, section Export)."""

    def __init__(self, model: AtomicModel, dtype: str, grade_matrix: Optional[Tensor] = None) -> None:
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
        # extrapolation grade (MaxVol active set, see `grade`): G = P A^-1 [n_features, r], float64
        # whatever the model dtype; [0, 0] = no active set
        gm = torch.zeros(0, 0, dtype=torch.float64) if grade_matrix is None else grade_matrix.to(torch.float64)
        self.register_buffer("grade_matrix", gm.contiguous())
        self.has_grade: bool = int(gm.shape[1]) > 0

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
        """Per-atom extrapolation grade γ_i = max_k |(b_i G)_k| of the first n_local atoms ([n_local],
        float64; b_i = the family's `grade_features` row); an empty tensor when the export has no
        active set. γ ≤ 1 interpolation, > 1 extrapolation (see docs/CONTRACT.md)."""
        g = self.grade_matrix
        if g.shape[1] == 0:
            return torch.zeros(0, dtype=torch.float64, device=edge_vec.device)
        rows = self.grade_rows(species, edge_index, edge_vec.detach(), n_local).detach()
        if rows.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float64, device=edge_vec.device)
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
        return ExportedMessagePassingModel if graded else _ExportedMessagePassingModelNoGrade
    return ExportedModel if graded else _ExportedModelNoGrade


def grade_matrix_of(model: AtomicModel, active_set: Any = None) -> Tuple[Optional[Tensor], Optional[Dict[str, Any]]]:
    """(G, metadata) of the per-atom ("nbh") active set to store in an export: `active_set` (a
    `mlip.active.maxvol.ActiveSet` built on the model's `grade_features`) if given, else the one an
    MTP carries (`active_nbh`), else (None, None)."""
    if active_set is not None:
        if not hasattr(model, "grade_features"):
            raise ValueError(f"family '{model.family}' has no grade features: it cannot carry an active set")
        g = torch.from_numpy(active_set.G).to(torch.float64)
        return g, {"mode": "nbh", **active_set.to_dict()}
    own = getattr(model, "active_nbh", None)
    if isinstance(own, Tensor) and own.dim() == 2 and own.shape[1] > 0:
        return own.detach().to(torch.float64).clone(), None  # its metadata comes with extra_metadata()
    return None, None


def model_metadata(model: AtomicModel, dtype: str) -> Dict[str, Any]:
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
        **model.extra_metadata(),
    }


def export_model(
    model: AtomicModel, path: str, dtype: str = "float64", extra: Optional[Dict[str, Any]] = None,
    active_set: Any = None,
) -> Dict[str, Any]:
    """Script `model` (a copy, in `dtype`) with its derivative code and write it to `path`.

    `active_set`: a MaxVol `ActiveSet` on the model's per-atom `grade_features` (built with
    `mlip.active.nn_grade.build_active_set`); stored as the buffer behind the export's `grade` method
    and in the metadata under active_set.nbh. An MTP's own nbh active set is stored the same way.

    The file is written to a temporary name and renamed, so an interrupted export never leaves a
    half-written model where a previous good one was.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    import copy

    if active_set is not None and hasattr(model, "set_active_set"):  # MTP: keep one active set
        model = copy.deepcopy(model)
        model.set_active_set("nbh", torch.from_numpy(active_set.G), {"mode": "nbh", **active_set.to_dict()})
        active_set = None
    grade_matrix, grade_meta = grade_matrix_of(model, active_set)
    m = copy.deepcopy(model).to(getattr(torch, dtype)).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    meta = model_metadata(m, dtype)
    if grade_meta is not None:
        meta.setdefault("active_set", {})["nbh"] = grade_meta
    meta["has_grade"] = grade_matrix is not None
    if extra:
        meta.update(extra)
    scripted = torch.jit.script(wrapper_class(m)(m, dtype, grade_matrix))
    tmp = f"{path}.tmp{os.getpid()}"
    torch.jit.save(scripted, tmp, _extra_files={METADATA_FILE: json.dumps(meta, indent=1)})
    os.replace(tmp, path)
    return meta


def read_metadata(path: str) -> Dict[str, Any]:
    """Metadata of an export without running it (raises ValueError with the file name)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file '{path}' does not exist")
    files = {METADATA_FILE: ""}
    try:
        torch.jit.load(path, map_location="cpu", _extra_files=files)
    except Exception as exc:  # torch raises RuntimeError with a C++ backtrace: keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"'{path}' is not a loadable TorchScript file: {first}") from None
    if not files[METADATA_FILE]:
        raise ValueError(f"'{path}' is not an mlip export (no {METADATA_FILE})")
    return json.loads(files[METADATA_FILE])
