"""The one in-memory representation of a labelled configuration, and its validation.

Units and signs follow docs/CONTRACT.md: Å, eV, eV/Å; `cell` rows are the cell vectors; `virial` is
the LAMMPS-sign virial `W = Σ_k x_k ⊗ F_k` in eV, so the (ASE) stress is `−W / V`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np


class DataError(ValueError):
    """A data file or frame is unusable. The message names the file, the frame and (where relevant)
    the atom, so it can be shown to a user as is."""


def _voigt_to_matrix(v: np.ndarray) -> np.ndarray:
    """ASE Voigt order xx yy zz yz xz xy -> symmetric 3x3."""
    xx, yy, zz, yz, xz, xy = (float(x) for x in v)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    m = 0.5 * (np.asarray(m, dtype=float) + np.asarray(m, dtype=float).T)
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


GROUP_KEYS = ("group", "config_type")  # where a frame's data group is read from


@dataclass
class Frame:
    symbols: List[str]  # element names per atom
    positions: np.ndarray  # (N,3) float64, Å
    cell: np.ndarray  # (3,3) float64, rows = cell vectors (zeros allowed along non-periodic dirs)
    pbc: np.ndarray  # (3,) bool
    energy: Optional[float] = None  # eV
    forces: Optional[np.ndarray] = None  # (N,3) eV/Å
    virial: Optional[np.ndarray] = None  # (3,3) eV, W = Σ x⊗F (stress = −W/V)
    weight: float = 1.0  # per-frame weight in the loss
    source: str = ""  # "path:frame_index" for error messages
    info: Dict[str, Any] = field(default_factory=dict)  # free-form extras (e.g. cfg Feature lines)

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    @property
    def volume(self) -> float:
        """|det(cell)| in Å³ (0.0 for a singular cell, e.g. a non-periodic frame)."""
        return float(abs(np.linalg.det(np.asarray(self.cell, dtype=float))))

    @property
    def stress(self) -> Optional[np.ndarray]:
        """ASE-sign stress −W/V (3x3, eV/Å³), None without a virial or a volume."""
        if self.virial is None or self.volume <= 0.0:
            return None
        return -np.asarray(self.virial, dtype=float) / self.volume

    def copy(self) -> "Frame":
        def c(a):
            return None if a is None else np.array(a, copy=True)

        return Frame(list(self.symbols), c(self.positions), c(self.cell), c(self.pbc), self.energy,
                     c(self.forces), c(self.virial), self.weight, self.source, dict(self.info))

    # ------------------------------------------------------------------ ASE conversion
    @classmethod
    def from_atoms(cls, atoms, source: str = "", energy_key: str = "energy",
                   forces_key: str = "forces", stress_key: str = "stress",
                   virial_key: str = "virial", weight_key: str = "weight") -> "Frame":
        """Build a Frame from an `ase.Atoms`.

        Labels are looked up first in the attached calculator's results (what ASE's extxyz reader
        and SinglePointCalculator produce), then in `atoms.info` / `atoms.arrays` under the given
        keys. Energy falls back to `free_energy` when `energy` is absent. A virial given directly
        (`virial_key`, 9 numbers or 3x3, LAMMPS sign, eV) wins over a stress; a stress (ASE sign,
        eV/Å³, Voigt xx yy zz yz xz xy or 3x3) is converted to W = −stress·V.
        """
        results: Dict[str, Any] = {}
        calc = getattr(atoms, "calc", None)
        if calc is not None:
            _compute_labels(atoms, calc)
            results = dict(getattr(calc, "results", None) or {})

        def lookup(key):
            if key in results and results[key] is not None:
                return results[key]
            if key in atoms.info:
                return atoms.info[key]
            if key in atoms.arrays:
                return atoms.arrays[key]
            return None

        where = source or "atoms"
        energy = lookup(energy_key)
        if energy is None and energy_key == "energy":
            energy = lookup("free_energy")
        if energy is not None:
            e = _as_float_array(energy, where, "energy")
            if e.size != 1:
                raise DataError(f"{where}: energy '{energy_key}' is not a scalar: {energy!r}")
            energy = float(e.reshape(-1)[0])
        forces = lookup(forces_key)
        if forces is not None:
            forces = _as_float_array(forces, where, "forces")
        virial = lookup(virial_key)
        cell = np.array(atoms.get_cell()[:], dtype=float)
        pbc = np.array(atoms.get_pbc(), dtype=bool)
        if virial is not None:
            virial = _as_float_array(virial, where, "virial")
            if virial.size != 9:
                raise DataError(f"{where}: virial '{virial_key}' must have 9 components, got shape "
                                f"{virial.shape}")
            virial = virial.reshape(3, 3)
        else:
            stress = lookup(stress_key)
            if stress is not None:
                stress = _as_float_array(stress, where, "stress")
                if stress.size == 6:
                    stress = _voigt_to_matrix(stress.reshape(6))
                elif stress.size == 9:
                    stress = stress.reshape(3, 3)
                else:
                    raise DataError(f"{where}: stress '{stress_key}' must have 6 or 9 components, got "
                                    f"shape {stress.shape}")
                vol = float(abs(np.linalg.det(cell)))
                if vol <= 0.0:
                    raise DataError(f"{where}: a stress is given but the cell has no volume")
                virial = -stress * vol
        weight = atoms.info.get(weight_key, 1.0) if weight_key else 1.0
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise DataError(f"{where}: weight '{weight_key}' is not a number: {weight!r}") from None
        return cls(
            symbols=list(atoms.get_chemical_symbols()),
            positions=np.array(atoms.get_positions(), dtype=float),
            cell=cell,
            pbc=pbc,
            energy=energy,
            forces=forces,
            virial=virial,
            weight=weight,
            source=source,
            info={k: atoms.info[k] for k in GROUP_KEYS if k in atoms.info},
        )

    @property
    def group(self) -> str:
        """The frame's data group (mlearn `group`, extxyz `config_type`), "" when it has none: error
        reports and parity plots break results down by it."""
        for k in GROUP_KEYS:
            if self.info.get(k) not in (None, ""):
                return str(self.info[k])
        return ""

    def to_atoms(self):
        """`ase.Atoms` with a SinglePointCalculator holding energy, forces and stress (= −W/V).

        Without a volume (non-periodic) the virial is kept in `atoms.info["virial"]` (3x3, eV).
        A weight different from 1 goes to `atoms.info["weight"]`.
        """
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.data import atomic_numbers

        for a, s in enumerate(self.symbols):
            if s not in atomic_numbers:
                raise DataError(f"{self.source or 'frame'}: atom {a}: '{s}' is not an element name "
                                f"(an untyped .cfg? pass type_map=[...] when reading it)")
        atoms = Atoms(symbols=list(self.symbols), positions=np.asarray(self.positions, dtype=float),
                      cell=np.asarray(self.cell, dtype=float), pbc=np.asarray(self.pbc, dtype=bool))
        results: Dict[str, Any] = {}
        if self.energy is not None:
            results["energy"] = float(self.energy)
        if self.forces is not None:
            results["forces"] = np.array(self.forces, dtype=float)
        if self.virial is not None:
            vol = self.volume
            if vol > 0.0:
                results["stress"] = _matrix_to_voigt(-np.asarray(self.virial, dtype=float) / vol)
            else:
                atoms.info["virial"] = np.array(self.virial, dtype=float)
        if self.weight != 1.0:
            atoms.info["weight"] = float(self.weight)
        for k in GROUP_KEYS:
            if k in self.info:
                atoms.info[k] = self.info[k]
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


def _compute_labels(atoms, calc) -> None:
    """With a live calculator (not a SinglePointCalculator), make sure energy/forces/stress are
    computed for the current positions (results may be stale or empty, e.g. after `rattle`)."""
    from ase.calculators.calculator import PropertyNotImplementedError
    from ase.calculators.singlepoint import SinglePointCalculator

    if isinstance(calc, SinglePointCalculator) or not hasattr(calc, "get_property"):
        return
    implemented = set(getattr(calc, "implemented_properties", ()))
    periodic = bool(np.all(atoms.get_pbc())) and abs(atoms.cell.volume) > 0
    for prop in ("energy", "forces", "stress"):
        if prop in implemented and (prop != "stress" or periodic):
            try:
                calc.get_property(prop, atoms)
            except PropertyNotImplementedError:
                pass


def _as_float_array(x, where: str, what: str) -> np.ndarray:
    try:
        return np.array(x, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} is not numeric") from None


# ---------------------------------------------------------------------- validation
def _first_bad(a: np.ndarray) -> Optional[tuple]:
    bad = np.argwhere(~np.isfinite(a))
    return tuple(int(i) for i in bad[0]) if len(bad) else None


def validate_frame(frame: Frame, species: Optional[Iterable[str]] = None, index: Optional[int] = None
                   ) -> Frame:
    """Check one frame; coerce arrays to float64/bool in place. Raises `DataError`."""
    where = frame.source or (f"frame {index}" if index is not None else "frame")
    if not isinstance(frame.symbols, (list, tuple)) and not isinstance(frame.symbols, np.ndarray):
        raise DataError(f"{where}: symbols must be a list of element names")
    frame.symbols = [str(s) for s in frame.symbols]
    n = len(frame.symbols)
    if n == 0:
        raise DataError(f"{where}: frame has zero atoms")
    try:
        frame.positions = np.asarray(frame.positions, dtype=np.float64)
        frame.cell = np.asarray(frame.cell, dtype=np.float64)
        frame.pbc = np.asarray(frame.pbc, dtype=bool)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: positions/cell/pbc are not numeric ({exc})") from None
    if frame.positions.shape != (n, 3):
        raise DataError(f"{where}: positions have shape {frame.positions.shape}, expected ({n}, 3) "
                        f"for {n} atoms (types/symbols)")
    if frame.cell.shape != (3, 3):
        raise DataError(f"{where}: cell has shape {frame.cell.shape}, expected (3, 3)")
    if frame.pbc.shape != (3,):
        if frame.pbc.shape == ():
            frame.pbc = np.array([bool(frame.pbc)] * 3)
        else:
            raise DataError(f"{where}: pbc has shape {frame.pbc.shape}, expected (3,)")
    bad = _first_bad(frame.positions)
    if bad is not None:
        raise DataError(f"{where}: atom {bad[0]}: non-finite position {frame.positions[bad[0]].tolist()}")
    bad = _first_bad(frame.cell)
    if bad is not None:
        raise DataError(f"{where}: non-finite cell {frame.cell.tolist()}")
    periodic = frame.cell[frame.pbc]
    if len(periodic):
        # the periodic cell vectors must be linearly independent and of non-zero length
        sv = np.linalg.svd(periodic, compute_uv=False)
        scale = max(float(np.abs(frame.cell).max()), 1.0)
        if sv.min() <= 1e-10 * scale:
            raise DataError(f"{where}: cell is singular along the periodic directions "
                            f"(pbc={frame.pbc.tolist()}, cell={frame.cell.tolist()})")
    if frame.energy is not None:
        try:
            frame.energy = float(frame.energy)
        except (TypeError, ValueError):
            raise DataError(f"{where}: energy is not a number: {frame.energy!r}") from None
        if not np.isfinite(frame.energy):
            raise DataError(f"{where}: non-finite energy {frame.energy}")
    if frame.forces is not None:
        try:
            frame.forces = np.asarray(frame.forces, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: forces are not numeric") from None
        if frame.forces.shape != (n, 3):
            raise DataError(f"{where}: forces have shape {frame.forces.shape}, expected ({n}, 3) to "
                            f"match {n} positions")
        bad = _first_bad(frame.forces)
        if bad is not None:
            raise DataError(f"{where}: atom {bad[0]}: non-finite force {frame.forces[bad[0]].tolist()}")
    if frame.virial is not None:
        try:
            frame.virial = np.asarray(frame.virial, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: virial is not numeric") from None
        if frame.virial.shape == (9,):
            frame.virial = frame.virial.reshape(3, 3)
        if frame.virial.shape != (3, 3):
            raise DataError(f"{where}: virial has shape {frame.virial.shape}, expected (3, 3)")
        if _first_bad(frame.virial) is not None:
            raise DataError(f"{where}: non-finite virial {frame.virial.tolist()}")
    try:
        frame.weight = float(frame.weight)
    except (TypeError, ValueError):
        raise DataError(f"{where}: weight is not a number: {frame.weight!r}") from None
    if not (np.isfinite(frame.weight) and frame.weight >= 0.0):
        raise DataError(f"{where}: weight must be finite and >= 0, got {frame.weight}")
    if species is not None:
        allowed = set(species)
        for a, s in enumerate(frame.symbols):
            if s not in allowed:
                raise DataError(f"{where}: atom {a}: species '{s}' is not in the allowed species "
                                f"{sorted(allowed)}")
    return frame


def validate_frames(frames: Sequence[Frame], species: Optional[Iterable[str]] = None) -> List[Frame]:
    """Validate every frame (see `validate_frame`); returns the same list for chaining."""
    species = None if species is None else list(species)
    for i, fr in enumerate(frames):
        if not isinstance(fr, Frame):
            raise DataError(f"item {i} is a {type(fr).__name__}, not a Frame")
        validate_frame(fr, species, index=i)
    return list(frames)


def species_in(frames: Iterable[Frame]) -> List[str]:
    """Distinct species, ordered by atomic number (non-element names last, numerically/alphabetically)."""
    from ase.data import atomic_numbers

    names = set()
    for f in frames:
        names.update(f.symbols)

    def key(s):
        if s in atomic_numbers:
            return (0, atomic_numbers[s], "")
        if s.isdigit():
            return (1, int(s), "")
        return (2, 0, s)

    return sorted(names, key=key)
