"""Extended XYZ (and any other ASE-readable format) <-> Frame.

Reading goes through `ase.io.read(path, ":")`, after `check_extxyz_layout` has checked the frames'
layout (a damaged comment line or atom row is an error naming the file, frame and line). Labels: `energy` (fallback `free_energy`), `forces`,
and either a `virial` info key (9 numbers, LAMMPS sign W = Σ x⊗F, eV — the convention of GPUMD/MACE
extxyz files) or a `stress` (ASE sign, eV/Å³), converted with W = −stress·V. An info key `weight`
sets the frame weight. Key names can be changed with the keyword arguments.

`write_extxyz` writes energy/forces/stress through a SinglePointCalculator (so any ASE tool reads
them) and, for frames without a volume, the virial as the `virial` info key.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from mlip.data.frame import DataError, Frame, validate_frames
from mlip.io.safe_write import atomic_open


def read_ase(path, species: Optional[Sequence[str]] = None, format: Optional[str] = None,
             energy_key: str = "energy", forces_key: str = "forces", stress_key: str = "stress",
             virial_key: str = "virial", weight_key: str = "weight", index: str = ":") -> List[Frame]:
    """Read every frame of an ASE-readable file into Frames (validated)."""
    import ase.io

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if format == "extxyz":
        check_extxyz_layout(path)
    try:
        images = ase.io.read(path, index=index, format=format)
    except Exception as exc:  # ASE raises many kinds of errors on malformed input
        raise DataError(f"{path}: cannot read as {format or 'an ASE format'}: "
                        f"{type(exc).__name__}: {exc}") from None
    if not isinstance(images, list):
        images = [images]
    frames = [Frame.from_atoms(a, source=f"{path}:{i}", energy_key=energy_key, forces_key=forces_key,
                               stress_key=stress_key, virial_key=virial_key, weight_key=weight_key)
              for i, a in enumerate(images)]
    if not frames:
        raise DataError(f"{path}: no frames")
    return validate_frames(frames, species)


_DEFAULT_PROPERTIES = "species:S:1:pos:R:3"  # what ASE assumes when a comment line declares none


def _columns(properties: str) -> List[Tuple[str, str, int]]:
    """[(name, type, count)] of a `Properties=` value (name:type:count triples)."""
    parts = properties.split(":")
    if len(parts) % 3 or not parts[0]:
        raise ValueError(f"Properties={properties} is not a list of name:type:count triples")
    out = []
    for k in range(0, len(parts), 3):
        name, kind, count = parts[k: k + 3]
        if kind not in ("S", "R", "I", "L") or not count.isdigit() or int(count) < 1:
            raise ValueError(f"Properties={properties}: '{name}:{kind}:{count}' is not name:S|R|I|L:count")
        out.append((name, kind, int(count)))
    return out


def check_extxyz_layout(path: str) -> None:
    """Check the frame layout of an extended-XYZ file before ASE reads it, so that damage is one error
    naming the file, frame and line instead of a silent loss or an anonymous ASE error: every atom
    count line is an integer, every comment line reads as key=value pairs, every frame declares
    `Properties=` when any frame of the file does (ASE reads a frame whose comment line is garbage as
    plain XYZ: no cell, no pbc, no labels), and every atom row has the columns its `Properties`
    declare, with numbers where they declare numbers."""
    from ase.io.extxyz import key_val_str_to_dict

    with open(path, errors="replace") as fh:
        lines = fh.read().splitlines()
    declared: List[bool] = []
    first_undeclared: Optional[Tuple[int, int, str]] = None
    i, frame = 0, 0
    n = len(lines)
    while i < n:
        if not lines[i].strip():
            if all(not rest.strip() for rest in lines[i:]):
                break  # blank lines at the end
            raise DataError(f"{path}, line {i + 1}: blank line where frame {frame}'s atom count should be")
        where = f"{path}, frame {frame} (line {i + 1})"
        try:
            natoms = int(lines[i].split()[0])
            if natoms < 0 or len(lines[i].split()) > 1:
                raise ValueError
        except ValueError:
            raise DataError(f"{where}: expected the number of atoms, got '{lines[i].strip()[:60]}'") from None
        if i + 1 >= n:
            raise DataError(f"{where}: the file ends before the frame's comment line")
        comment = lines[i + 1]
        where = f"{path}, frame {frame} (line {i + 2})"
        try:
            info = key_val_str_to_dict(comment)
            has_props = "Properties" in info
            cols = _columns(str(info["Properties"]) if has_props else _DEFAULT_PROPERTIES)
            if "pbc" in info and len(np.atleast_1d(info["pbc"])) != 3:
                raise ValueError(f"pbc needs 3 values, got {info['pbc']}")
        except Exception as exc:
            raise DataError(f"{where}: the comment line cannot be read as extended-XYZ key=value pairs "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                            f"'{comment.strip()[:80]}'") from None
        declared.append(has_props)
        if not has_props and first_undeclared is None:
            first_undeclared = (frame, i + 2, comment)
        width = sum(c for _, _, c in cols)
        numeric = [kind in "RI" for _, kind, c in cols for _ in range(c)]
        for j in range(natoms):
            ln = i + 2 + j
            if ln >= n:
                raise DataError(f"{path}, frame {frame}: the file ends after {j} of its {natoms} atoms "
                                f"(line {ln})")
            tokens = lines[ln].split()
            if len(tokens) != width and not has_props:
                raise DataError(f"{where}: the comment line declares no Properties=, yet atom {j} (line "
                                f"{ln + 1}) has {len(tokens)} columns: is the comment line damaged? "
                                f"'{comment.strip()[:80]}'")
            if len(tokens) != width:
                raise DataError(f"{path}, frame {frame}, atom {j} (line {ln + 1}): {len(tokens)} columns, but "
                                f"the frame's Properties={info['Properties']} means {width}")
            for t, num in zip(tokens, numeric):
                if num:
                    try:
                        float(t)
                    except ValueError:
                        raise DataError(f"{path}, frame {frame}, atom {j} (line {ln + 1}): '{t}' is not a "
                                        "number") from None
        i += 2 + natoms
        frame += 1
    if first_undeclared is not None and any(declared):
        k, line, comment = first_undeclared
        raise DataError(f"{path}, frame {k} (line {line}): the comment line declares no Properties= (other "
                        f"frames do): its cell, pbc and labels would be lost; is it damaged? "
                        f"'{comment.strip()[:80]}'")


def read_extxyz(path, species: Optional[Sequence[str]] = None, **kwargs) -> List[Frame]:
    """Read an extended-XYZ file (see module docstring for the label keys)."""
    return read_ase(path, species=species, format="extxyz", **kwargs)


def write_extxyz(frames: Sequence[Frame], path) -> None:
    """Write frames to an extended-XYZ file readable by `read_extxyz` and by ASE."""
    import ase.io

    validate_frames(frames)
    images = [fr.to_atoms() for fr in frames]
    with atomic_open(os.fspath(path)) as fh:  # complete or not at all (mlip.io.safe_write)
        ase.io.write(fh, images, format="extxyz")
