"""Format dispatch and dataset utilities (loading several sources, splitting, species, weights)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from mlip.data.frame import DataError, Frame, validate_frames

FORMATS = ("deepmd", "mlearn", "cfg", "extxyz", "ase")
PathLike = Union[str, os.PathLike]


def guess_format(path: PathLike) -> str:
    """directory with type.raw (itself or below) -> deepmd; .json -> mlearn; .cfg -> cfg;
    .xyz/.extxyz -> extxyz; anything else -> ase (ase.io guesses)."""
    p = Path(path)
    if p.is_dir():
        from mlip.data.deepmd import find_deepmd_systems

        if find_deepmd_systems(p):
            return "deepmd"
        raise DataError(f"{p}: a directory but not a DeePMD system (no type.raw at or below it)")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return "mlearn"
    if suffix == ".cfg":
        return "cfg"
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    return "ase"


def read_frames(path: PathLike, fmt: Optional[str] = None, type_map: Optional[Sequence[str]] = None,
                species: Optional[Sequence[str]] = None, **kwargs) -> List[Frame]:
    """Read one file/directory into validated Frames.

    `type_map` names integer types (cfg; DeePMD systems without type_map.raw); `species` restricts
    the allowed elements; other keyword arguments go to the format's reader
    (e.g. `voigt_order=` for mlearn, `energy_key=` for extxyz/ase).
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    fmt = fmt or guess_format(path)
    if fmt == "deepmd":
        from mlip.data.deepmd import read_deepmd

        return read_deepmd(path, type_map=type_map, species=species, **kwargs)
    if fmt == "mlearn":
        from mlip.data.mlearn import read_mlearn

        return read_mlearn(path, species=species, **kwargs)
    if fmt == "cfg":
        from mlip.data.cfg import read_cfg

        return read_cfg(path, type_map=type_map, species=species, **kwargs)
    if fmt == "extxyz":
        from mlip.data.extxyz import read_extxyz

        return read_extxyz(path, species=species, **kwargs)
    if fmt == "ase":
        from mlip.data.extxyz import read_ase

        return read_ase(path, species=species, **kwargs)
    raise DataError(f"{path}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def load_dataset(paths: Union[PathLike, Iterable[PathLike]], type_map: Optional[Sequence[str]] = None,
                 species: Optional[Sequence[str]] = None, fmt: Optional[str] = None, **kwargs
                 ) -> List[Frame]:
    """Read and concatenate several sources (each through `read_frames`)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames: List[Frame] = []
    for p in paths:
        frames.extend(read_frames(p, fmt=fmt, type_map=type_map, species=species, **kwargs))
    if not frames:
        raise DataError("load_dataset: no frames (empty list of paths?)")
    return frames


def split_frames(frames: Sequence[Frame], val_fraction: float, seed: int = 0
                 ) -> Tuple[List[Frame], List[Frame]]:
    """Deterministic random split (same frames, seed -> same split); both parts keep file order.

    The validation set gets round(val_fraction·n) frames, at least 1 when val_fraction > 0 and
    n ≥ 2, and never all of them unless val_fraction == 1.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    n = len(frames)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if val_fraction < 1 and n_val == n and n >= 2:
        n_val = n - 1
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(int(i) for i in perm[:n_val])
    train = [f for i, f in enumerate(frames) if i not in val_idx]
    val = [f for i, f in enumerate(frames) if i in val_idx]
    return train, val


def set_weights(frames: Sequence[Frame],
                weights: Union[float, Sequence[float], Callable[[Frame], float]]) -> List[Frame]:
    """Set per-frame loss weights in place: one number, one per frame, or a function of the frame."""
    if callable(weights):
        values = [weights(f) for f in frames]
    elif np.ndim(weights) == 0:
        values = [weights] * len(frames)
    else:
        values = list(weights)
        if len(values) != len(frames):
            raise ValueError(f"{len(values)} weights for {len(frames)} frames")
    for f, w in zip(frames, values):
        f.weight = w
    return validate_frames(frames)
