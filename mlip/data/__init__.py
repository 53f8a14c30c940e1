"""The data layer: one in-memory `Frame`, readers for extxyz / DeePMD npy / mlearn JSON / MLIP cfg
(and anything ASE reads), writers for extxyz and cfg, validation, and dataset utilities.

Units and signs (docs/CONTRACT.md): Å, eV, eV/Å; cell rows are cell vectors; `Frame.virial` is the
LAMMPS-sign virial W = Σ x⊗F in eV (ASE stress = −W/V). Every reader validates its frames and
raises `DataError` (a `ValueError`) naming the file, the frame index and, where relevant, the atom.
"""
from __future__ import annotations

from mlip.data.cfg import apply_type_map, read_cfg, write_cfg
from mlip.data.dataset import FORMATS, guess_format, load_dataset, read_frames, set_weights, split_frames
from mlip.data.deepmd import find_deepmd_systems, read_deepmd, read_deepmd_system
from mlip.data.extxyz import read_ase, read_extxyz, write_extxyz
from mlip.data.frame import DataError, Frame, species_in, validate_frame, validate_frames
from mlip.data.mlearn import (KBAR_PER_EV_A3, detect_voigt_order, elastic_stress_check,
                              kbar_stress_to_virial, read_mlearn)

__all__ = [
    "DataError", "Frame", "validate_frame", "validate_frames",
    "read_frames", "load_dataset", "split_frames", "species_in", "set_weights", "guess_format",
    "FORMATS",
    "read_extxyz", "read_ase", "write_extxyz",
    "read_deepmd", "read_deepmd_system", "find_deepmd_systems",
    "read_mlearn", "elastic_stress_check", "detect_voigt_order", "kbar_stress_to_virial",
    "KBAR_PER_EV_A3",
    "read_cfg", "write_cfg", "apply_type_map",
]
