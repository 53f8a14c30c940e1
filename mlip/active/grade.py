"""Extrapolation grade γ and D-optimal selection for every family, through one mechanism.

Every family's model has a scripted `grade_features(species, edge_index, edge_vec)` (NequIP: an
optional `n_local`): per-atom rows b_i, the gradient of E_i with respect to the model's last linear
parameters (MTP: [onehot, B]; Deep Potential: [onehot, last hidden layer of the fitting net]; NequIP:
[onehot, scaled last invariant features]). Two kinds of rows, `mode`:

    nbh   one row per neighbourhood (atom): b_i
    cfg   one row per configuration: Σ_i b_i (the gradient of the total energy; MLIP-2's "cfg")

A MaxVol active set on the training rows (`mlip.active.maxvol.ActiveSet`, built here and only here)
gives G = P A⁻¹ and γ(b) = max_k |(b G)_k|: γ ≤ 1 interpolation, γ > 1 means fitting the linear
parameters to b would need coefficients outside the span of the training rows (Podryabinkin &
Shapeev 2017; Lysogorskiy et al. 2023 use the same last-layer idea for ACE). The active set goes into
the export as a plain grade matrix (`mlip.export.export_model(grade_matrix=, grade_mode=,
grade_meta=)`; `export_graded` here does that), whose scripted `grade` the C++ engine runs for the
ASE calculator and the LAMMPS pair_style alike.

    aset = build_active_set(model, train_frames, mode="nbh")   # MaxVol on the training rows
    export_graded(model, "model.pt", aset)                      # G in the export, rows in its metadata
    gammas = grade_frames(model, frames, aset)                  # per frame: [N] (nbh) or [1] (cfg)
    gammas = grade_frames("model.pt", frames)                   # the same through the export's `grade`
    chosen = select_frames(model, candidates, aset, threshold=1.0, max_select=20)   # updates aset
    aset = read_active_set("model.pt")                          # the export's active set (or None)
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from mlip.active.maxvol import ActiveSet
from mlip.export import export_model, read_metadata
from mlip.graph import frame_edges
from mlip.models.base import model_dtype

__all__ = ["MODES", "build_active_set", "export_graded", "feature_rows", "grade_frames", "read_active_set",
           "select_frames"]

MODES = ("nbh", "cfg")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"grade mode must be one of {MODES}, got {mode!r}")


def feature_rows(model: nn.Module, frames: Sequence[Any], mode: str = "nbh",
                 progress: str = "") -> Tuple[np.ndarray, List[List[int]]]:
    """Feature rows of `frames` ([rows, n_features], float64) and a source [frame, atom] per row
    (atom = -1 for cfg rows). `model`: a Python model or the scripted model inside an export.
    `progress`: a label for a progress bar over the frames (none when empty)."""
    _check_mode(mode)
    if not hasattr(model, "grade_features"):
        raise ValueError(f"family '{getattr(model, 'family', type(model).__name__)}' has no grade features")
    species, cutoff, dtype = list(model.species), float(model.cutoff), model_dtype(model)
    rows, sources = [], []
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc=progress, unit="cfg", dynamic_ncols=True, leave=False)
    with torch.no_grad():
        for k, fr in enumerate(frames):
            sp, ei, vec = frame_edges(fr, species, cutoff, dtype)
            f = model.grade_features(sp, ei, vec).detach().double().numpy()
            if mode == "nbh":
                rows.append(f)
                sources.extend([[k, a] for a in range(f.shape[0])])
            else:
                rows.append(f.sum(0, keepdims=True))
                sources.append([k, -1])
    if not rows:
        raise ValueError("no configurations given")
    return np.concatenate(rows, 0), sources


def build_active_set(model: nn.Module, frames: Sequence[Any], mode: str = "nbh", tol: float = 1.0 + 1e-9,
                     rtol: float = 1e-9, progress: str = "") -> ActiveSet:
    """MaxVol active set of the `mode` rows of the training `frames` (γ ≤ tol on each of them)."""
    X, sources = feature_rows(model, frames, mode, progress)
    return ActiveSet.build(X, tol=tol, rtol=rtol, sources=sources, mode=mode)


def grade_frames(model_or_export: Union[nn.Module, str], frames: Sequence[Any],
                 aset: Optional[ActiveSet] = None) -> List[np.ndarray]:
    """γ per frame: per-atom [N] (nbh) or [1] (cfg).

    With a Python model and `aset`: the reference computation (feature rows times G). With an export
    (a path, or the module `torch.jit.load` returned) and no `aset`: its scripted `grade`, i.e. what
    the C++ engine reports."""
    if aset is not None:
        if isinstance(model_or_export, str):
            raise ValueError("grade_frames: give a model with `aset`, or an export path without it")
        return [aset.gamma(feature_rows(model_or_export, [fr], aset.mode)[0]) for fr in frames]
    if isinstance(model_or_export, str):
        from mlip.io.export_metadata import check_export_archive

        check_export_archive(model_or_export)  # a damaged export is refused, not graded
        export = torch.jit.load(model_or_export, map_location="cpu")
    else:
        export = model_or_export
    if not bool(getattr(export, "has_grade", False)):
        raise ValueError("the model has no active set: give `aset`, or an export built with one "
                         "(`mlip select MODEL --train TRAIN -u OUT.pt`)")
    mode = str(getattr(export, "grade_mode", "nbh"))  # exports older than grade_mode are nbh
    dtype = torch.float32 if str(export.dtype) == "float32" else torch.float64
    out = []
    with torch.no_grad():
        for fr in frames:
            sp, ei, vec = frame_edges(fr, list(export.species), float(export.cutoff), dtype)
            g = export.grade(sp, ei, vec, int(sp.shape[0])).double().numpy()
            out.append(g[:1] if mode == "cfg" else g)
    return out


def select_frames(model: nn.Module, candidates: Sequence[Any], aset: ActiveSet, threshold: float = 1.0,
                  max_select: Optional[int] = None) -> List[int]:
    """D-optimal batch: the candidate configurations whose rows enter `aset` by greedy
    volume-increasing MaxVol swaps (|swap factor| > threshold ≥ 1), at most `max_select` of them.
    `aset` is updated in place, so each candidate is judged against those already chosen.
    Returns sorted candidate indices."""
    if not len(candidates):
        return []
    rows, sources = feature_rows(model, candidates, aset.mode)
    groups = [s[0] for s in sources]
    chosen_rows = aset.select(rows, threshold=threshold, groups=groups, max_groups=max_select,
                              sources=[["candidate"] + list(s) for s in sources])
    return sorted({groups[r] for r in chosen_rows})


def read_active_set(path: str) -> Optional[ActiveSet]:
    """The active set stored in an export's metadata (None if it has none)."""
    sets = read_metadata(path).get("active_set") or {}
    if not sets:
        return None
    if len(sets) > 1:  # written before one export carried one active set: the per-atom one was graded
        mode = "nbh" if "nbh" in sets else sorted(sets)[0]
    else:
        (mode,) = sets
    return ActiveSet.from_dict({**sets[mode], "mode": mode})


def export_graded(model: nn.Module, path: str, aset: Optional[ActiveSet], dtype: str = "float64",
                  extra: Optional[dict] = None) -> dict:
    """`export_model` with `aset` as the export's grade matrix (a plain export when `aset` is None)."""
    if aset is None:
        return export_model(model, path, dtype=dtype, extra=extra)
    return export_model(model, path, dtype=dtype, extra=extra, grade_matrix=aset.G, grade_mode=aset.mode,
                        grade_meta=aset.to_dict())
