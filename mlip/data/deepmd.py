"""DeePMD-kit `npy` (and `raw`) systems -> Frames.

A system is a directory with `type.raw` (one integer type per atom), `type_map.raw` (type -> element
name; optional when `type_map=` is given) and either `set.*/` folders of `.npy` files or the plain
text `.raw` equivalents at the system level:

- `coord` (frames × 3N, Å), `box` (frames × 9, Å, rows are cell vectors; absent with `nopbc`),
- `energy` (frames, eV), `force` (frames × 3N, eV/Å), `virial` (frames × 9, eV, already the LAMMPS
  sign W = Σ x⊗F used by mlip — no conversion).

A file `nopbc` in the system makes it non-periodic (pbc False, cell zeros). A directory that is not
itself a system but contains systems (e.g. `water/` -> `data_0..2`) is read system after system in
sorted path order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from mlip.data.frame import DataError, Frame, validate_frames


def is_deepmd_system(path) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), "type.raw"))


def find_deepmd_systems(path) -> List[Path]:
    """The system directories at or below `path` (sorted), [] if none."""
    p = Path(path)
    if is_deepmd_system(p):
        return [p]
    return sorted(q.parent for q in p.rglob("type.raw") if q.is_file())


def _load_array(path: Path, system: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return np.loadtxt(path, ndmin=1)
    except Exception as exc:  # truncated npy: ValueError/EOFError/OSError; bad text: ValueError
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc}) — truncated or corrupt "
                        f"file in DeePMD system {system}") from None


def _read_types(system: Path) -> np.ndarray:
    path = system / "type.raw"
    try:
        types = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except Exception as exc:
        raise DataError(f"{path}: cannot read the atom types ({type(exc).__name__}: {exc})") from None
    if types.ndim != 1:
        types = types.reshape(-1)
    if len(types) == 0:
        raise DataError(f"{path}: no atoms (empty type.raw)")
    bad = np.nonzero(types < 0)[0]
    if len(bad):
        raise DataError(f"{path}: atom {int(bad[0])}: negative type {int(types[bad[0]])}")
    return types


def _read_type_map(system: Path, type_map: Optional[Sequence[str]]) -> List[str]:
    """Type names: the system's own type_map.raw wins; `type_map` is the fallback without one."""
    path = system / "type_map.raw"
    if path.is_file():
        try:
            names = path.read_text().split()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from None
        if not names:
            raise DataError(f"{path}: empty type map")
        return names
    if type_map is None:
        raise DataError(f"{system}: no type_map.raw; pass type_map=[...] (type index -> element)")
    return list(type_map)


def _set_dirs(system: Path) -> List[Path]:
    return sorted(d for d in system.glob("set.*") if d.is_dir())


def read_deepmd_system(system, type_map: Optional[Sequence[str]] = None,
                       species: Optional[Sequence[str]] = None) -> List[Frame]:
    system = Path(system)
    if not is_deepmd_system(system):
        raise DataError(f"{system}: not a DeePMD system (no type.raw)")
    types = _read_types(system)
    names = _read_type_map(system, type_map)
    if int(types.max()) >= len(names):
        a = int(np.argmax(types >= len(names)))
        raise DataError(f"{system / 'type.raw'}: atom {a}: type {int(types[a])} has no name in "
                        f"type_map {names}")
    symbols = [names[t] for t in types]
    n = len(types)
    nopbc = (system / "nopbc").exists()
    if any((d / "real_atom_types.npy").exists() for d in _set_dirs(system)):
        raise DataError(f"{system}: mixed-type DeePMD systems (real_atom_types.npy) are not supported")

    chunks = []  # (label, {name: array})
    sets = _set_dirs(system)
    if sets:
        for d in sets:
            chunks.append((d, {k: d / f"{k}.npy" for k in ("coord", "box", "energy", "force", "virial")
                               if (d / f"{k}.npy").is_file()}))
    elif (system / "coord.raw").is_file():
        chunks.append((system, {k: system / f"{k}.raw" for k in ("coord", "box", "energy", "force",
                                                                  "virial")
                                if (system / f"{k}.raw").is_file()}))
    else:
        raise DataError(f"{system}: no set.* directories and no coord.raw")

    frames: List[Frame] = []
    for label, files in chunks:
        if "coord" not in files:
            raise DataError(f"{label}: missing coord.npy")
        coord = _load_array(files["coord"], system)
        if coord.ndim == 1:
            coord = coord.reshape(1, -1)
        nf = coord.shape[0]
        if coord.shape[1] != 3 * n:
            raise DataError(f"{files['coord']}: {coord.shape[1]} coordinates per frame, expected "
                            f"3 × {n} atoms from type.raw")
        coord = coord.reshape(nf, n, 3)

        def per_frame(key, width):
            if key not in files:
                return None
            arr = _load_array(files[key], system)
            if arr.ndim == 0 or (arr.ndim == 1 and width == 1):
                arr = arr.reshape(-1, 1)
            elif arr.ndim == 1:  # a single frame written as one text row
                arr = arr.reshape(1, -1)
            else:
                arr = arr.reshape(arr.shape[0], -1)
            if arr.shape[0] != nf:
                raise DataError(f"{files[key]}: {arr.shape[0]} frames, but coord has {nf}")
            if arr.shape[1] != width:
                raise DataError(f"{files[key]}: {arr.shape[1]} values per frame, expected {width}"
                                + (f" (3 × {n} atoms)" if width == 3 * n else ""))
            return arr

        box = None if nopbc else per_frame("box", 9)
        if box is None and not nopbc:
            raise DataError(f"{label}: missing box.npy (add an empty 'nopbc' file for a "
                            f"non-periodic system)")
        energy = per_frame("energy", 1)
        force = per_frame("force", 3 * n)
        virial = per_frame("virial", 9)
        for i in range(nf):
            frames.append(Frame(
                symbols=list(symbols),
                positions=coord[i].astype(np.float64),
                cell=np.zeros((3, 3)) if box is None else box[i].reshape(3, 3).astype(np.float64),
                pbc=np.array([not nopbc] * 3),
                energy=None if energy is None else float(energy[i, 0]),
                forces=None if force is None else force[i].reshape(n, 3).astype(np.float64),
                virial=None if virial is None else virial[i].reshape(3, 3).astype(np.float64),
                source=f"{label}:{i}",
            ))
    if not frames:
        raise DataError(f"{system}: no frames")
    return validate_frames(frames, species)


def read_deepmd(path, type_map: Optional[Sequence[str]] = None,
                species: Optional[Sequence[str]] = None) -> List[Frame]:
    """Read one DeePMD system, or every system below a parent directory."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory (a DeePMD system is a directory with type.raw)")
    systems = find_deepmd_systems(path)
    if not systems:
        raise DataError(f"{path}: no DeePMD system (no type.raw) at or below this directory")
    frames: List[Frame] = []
    for s in systems:
        frames.extend(read_deepmd_system(s, type_map=type_map, species=species))
    return frames
