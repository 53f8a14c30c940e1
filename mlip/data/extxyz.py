"""Extended XYZ (and any other ASE-readable format) <-> Frame.

Reading goes through `ase.io.read(path, ":")`. Labels: `energy` (fallback `free_energy`), `forces`,
and either a `virial` info key (9 numbers, LAMMPS sign W = Σ x⊗F, eV — the convention of GPUMD/MACE
extxyz files) or a `stress` (ASE sign, eV/Å³), converted with W = −stress·V. An info key `weight`
sets the frame weight. Key names can be changed with the keyword arguments.

`write_extxyz` writes energy/forces/stress through a SinglePointCalculator (so any ASE tool reads
them) and, for frames without a volume, the virial as the `virial` info key.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

from mlip.data.frame import DataError, Frame, validate_frames


def read_ase(path, species: Optional[Sequence[str]] = None, format: Optional[str] = None,
             energy_key: str = "energy", forces_key: str = "forces", stress_key: str = "stress",
             virial_key: str = "virial", weight_key: str = "weight", index: str = ":") -> List[Frame]:
    """Read every frame of an ASE-readable file into Frames (validated)."""
    import ase.io

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
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


def read_extxyz(path, species: Optional[Sequence[str]] = None, **kwargs) -> List[Frame]:
    """Read an extended-XYZ file (see module docstring for the label keys)."""
    return read_ase(path, species=species, format="extxyz", **kwargs)


def write_extxyz(frames: Sequence[Frame], path) -> None:
    """Write frames to an extended-XYZ file readable by `read_extxyz` and by ASE."""
    import ase.io

    validate_frames(frames)
    images = [fr.to_atoms() for fr in frames]
    ase.io.write(os.fspath(path), images, format="extxyz")
