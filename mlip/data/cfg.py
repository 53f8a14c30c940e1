"""MLIP (MLIP-2) `.cfg` files <-> Frames.

A file is a sequence of blocks::

    BEGIN_CFG
     Size
        2
     Supercell                      (one row per periodic direction, rows = cell vectors;
         3.0  0.0  0.0               fewer rows / none for non-periodic configurations)
         0.0  3.0  0.0
         0.0  0.0  3.0
     AtomData:  id type  cartes_x cartes_y cartes_z  fx fy fz
                 1    0   0.0 0.0 0.0   0.1 0.0 0.0
                 2    0   1.5 1.5 1.5  -0.1 0.0 0.0
     Energy
        -7.5
     PlusStress:  xx yy zz yz xz xy
         1.0 1.0 1.0 0.0 0.0 0.0
     EnergyWeight                   (optional -> Frame.weight)
        1.0
     Feature   EFS_by  VASP         (kept in Frame.info["cfg_features"], written back)
    END_CFG

Semantics: `AtomData` columns are found by name (`cartes_*` Cartesian Å or `direct_*` fractional,
`fx fy fz` eV/Å, other columns such as `nbh_grades` are ignored). `PlusStress` is the virial in eV
as MLIP computes it, −∂E/∂ε = −Σ_edges g ⊗ r, i.e. exactly our LAMMPS-sign W (stress = −W/V): it is
stored in `Frame.virial` without sign change or volume factor (components in the order named on
the `PlusStress:` line, xx yy zz yz xz xy by default). Types are integers (0-based): `type_map[k]`
names type k. Without a type_map the symbols are the type numbers as strings ("0", "1", ...); such
frames are rejected with a clear message when converted to ASE or checked against a species list,
and can be named later with `apply_type_map`.

`k` Supercell rows make the first `k` directions periodic (a lattice vector has no fixed Cartesian
direction in MLIP, so a frame periodic along, e.g., y and z only is written with its two periodic
vectors and reads back as periodic along the first two cell rows: the same physical system).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from mlip.data.frame import DataError, Frame, species_in, validate_frames
from mlip.io.safe_write import atomic_write

_KEYWORDS = ("BEGIN_CFG", "END_CFG", "SIZE", "SUPERCELL", "ATOMDATA", "ENERGY", "PLUSSTRESS",
             "FEATURE", "ENERGYWEIGHT")
_STRESS_DEFAULT = ["xx", "yy", "zz", "yz", "xz", "xy"]
_STRESS_IDX = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "yz": (1, 2), "zy": (1, 2), "xz": (0, 2),
               "zx": (0, 2), "xy": (0, 1), "yx": (0, 1)}


def _keyword(line: str) -> Optional[str]:
    tok = line.split()
    if not tok:
        return None
    try:
        float(tok[0])
        return None  # a number (including nan/inf), not a keyword
    except ValueError:
        pass
    word = tok[0].rstrip(":").upper()
    return word if word.replace("_", "").isalpha() else None


def _floats(line: str, n: Optional[int], where: str, what: str) -> List[float]:
    parts = line.split()
    if n is not None and len(parts) != n:
        raise DataError(f"{where}: {what}: expected {n} numbers, got {len(parts)}: {line.strip()!r}")
    try:
        return [float(x) for x in parts]
    except ValueError:
        raise DataError(f"{where}: {what}: not a number in {line.strip()!r}") from None


class _Block:
    def __init__(self, start_line: int):
        self.start = start_line
        self.size: Optional[int] = None
        self.cell_rows: List[List[float]] = []
        self.types: Optional[np.ndarray] = None
        self.pos: Optional[np.ndarray] = None
        self.direct = False
        self.forces: Optional[np.ndarray] = None
        self.energy: Optional[float] = None
        self.virial: Optional[np.ndarray] = None
        self.weight = 1.0
        self.features: List[List[str]] = []


def read_cfg(path, type_map: Optional[Sequence[str]] = None, species: Optional[Sequence[str]] = None
             ) -> List[Frame]:
    """Read every configuration of an MLIP `.cfg` file (validated)."""
    path = os.fspath(path)
    try:
        with open(path, "r") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None

    blocks: List[_Block] = []
    cur: Optional[_Block] = None
    i, n_lines = 0, len(lines)

    def where(lineno: int) -> str:
        return f"{path}:{len(blocks)} (line {lineno + 1})"

    while i < n_lines:
        line = lines[i]
        kw = _keyword(line)
        if kw is None and not line.strip():
            i += 1
            continue
        if cur is None:
            if kw != "BEGIN_CFG":
                raise DataError(f"{path}: line {i + 1}: expected BEGIN_CFG, got {line.strip()!r}")
            cur = _Block(i)
            i += 1
            continue
        w = where(i)
        if kw == "BEGIN_CFG":
            raise DataError(f"{path}:{len(blocks)}: block starting at line {cur.start + 1} has no "
                            f"END_CFG (a new BEGIN_CFG at line {i + 1})")
        if kw == "END_CFG":
            blocks.append(cur)
            cur = None
            i += 1
        elif kw == "SIZE":
            if i + 1 >= n_lines:
                break
            try:
                cur.size = int(lines[i + 1].split()[0])
            except (ValueError, IndexError):
                raise DataError(f"{where(i + 1)}: Size: not an integer: {lines[i + 1].strip()!r}") from None
            if cur.size < 0:
                raise DataError(f"{where(i + 1)}: Size is negative")
            i += 2
        elif kw == "SUPERCELL":
            i += 1
            while i < n_lines and _keyword(lines[i]) is None and lines[i].strip():
                if len(cur.cell_rows) == 3:
                    raise DataError(f"{where(i)}: Supercell has more than 3 rows")
                cur.cell_rows.append(_floats(lines[i], 3, where(i), "Supercell row"))
                i += 1
        elif kw == "ATOMDATA":
            cols = [c.lower() for c in line.split(":", 1)[1].split()] if ":" in line else line.split()[1:]
            if cur.size is None:
                raise DataError(f"{w}: AtomData before Size")
            need_pos = ["cartes_x", "cartes_y", "cartes_z"]
            if not all(c in cols for c in need_pos):
                need_pos = ["direct_x", "direct_y", "direct_z"]
                cur.direct = True
                if not all(c in cols for c in need_pos):
                    raise DataError(f"{w}: AtomData needs cartes_x/y/z or direct_x/y/z columns, got {cols}")
            if "type" not in cols:
                raise DataError(f"{w}: AtomData has no 'type' column: {cols}")
            has_f = all(c in cols for c in ("fx", "fy", "fz"))
            ip = [cols.index(c) for c in need_pos]
            it = cols.index("type")
            iff = [cols.index(c) for c in ("fx", "fy", "fz")] if has_f else []
            types = np.zeros(cur.size, dtype=np.int64)
            pos = np.zeros((cur.size, 3))
            frc = np.zeros((cur.size, 3)) if has_f else None
            for a in range(cur.size):
                j = i + 1 + a
                if j >= n_lines or _keyword(lines[j]) is not None or not lines[j].strip():
                    raise DataError(f"{where(j if j < n_lines else n_lines - 1)}: AtomData: atom {a}: "
                                    f"missing line (Size says {cur.size} atoms)")
                parts = lines[j].split()
                if len(parts) != len(cols):
                    raise DataError(f"{where(j)}: atom {a}: {len(parts)} columns, expected {len(cols)} "
                                    f"({' '.join(cols)})")
                try:
                    types[a] = int(parts[it])
                    pos[a] = [float(parts[k]) for k in ip]
                    if has_f:
                        frc[a] = [float(parts[k]) for k in iff]
                except ValueError:
                    raise DataError(f"{where(j)}: atom {a}: not a number in {lines[j].strip()!r}") from None
            cur.types, cur.pos, cur.forces = types, pos, frc
            i += 1 + cur.size
        elif kw == "ENERGY":
            if i + 1 >= n_lines:
                break
            cur.energy = _floats(lines[i + 1], 1, where(i + 1), "Energy")[0]
            i += 2
        elif kw == "PLUSSTRESS":
            names = [c.lower() for c in line.split(":", 1)[1].split()] if ":" in line else []
            names = names or list(_STRESS_DEFAULT)
            if len(names) != 6 or any(c not in _STRESS_IDX for c in names):
                raise DataError(f"{w}: PlusStress: unknown components {names}")
            if i + 1 >= n_lines:
                break
            vals = _floats(lines[i + 1], 6, where(i + 1), "PlusStress")
            vir = np.zeros((3, 3))
            for v, c in zip(vals, names):
                a, b = _STRESS_IDX[c]
                vir[a, b] = vir[b, a] = v
            cur.virial = vir
            i += 2
        elif kw == "ENERGYWEIGHT":
            if i + 1 >= n_lines:
                break
            cur.weight = _floats(lines[i + 1], 1, where(i + 1), "EnergyWeight")[0]
            i += 2
        elif kw == "FEATURE":
            parts = line.split(None, 2)
            cur.features.append([parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""])
            i += 1
        elif kw is not None:
            # unknown section (e.g. from a newer MLIP): skip it and its numeric lines
            i += 1
            while i < n_lines and _keyword(lines[i]) is None and lines[i].strip():
                i += 1
        else:
            raise DataError(f"{w}: unexpected line {line.strip()!r}")
    if cur is not None:
        raise DataError(f"{path}:{len(blocks)}: block starting at line {cur.start + 1} has no END_CFG "
                        f"(truncated file?)")
    if not blocks:
        raise DataError(f"{path}: no BEGIN_CFG ... END_CFG block")

    frames = []
    for k, b in enumerate(blocks):
        src = f"{path}:{k}"
        if b.size is None or b.types is None:
            raise DataError(f"{src}: block at line {b.start + 1} has no Size/AtomData")
        cell = np.zeros((3, 3))
        pbc = np.zeros(3, dtype=bool)
        nrow = len(b.cell_rows)
        if nrow:
            cell[:nrow] = np.array(b.cell_rows)
            pbc[:nrow] = True
        pos = b.pos
        if b.direct:
            if nrow != 3:
                raise DataError(f"{src}: direct (fractional) coordinates need 3 Supercell rows")
            pos = pos @ cell
        if type_map is not None:
            bad = np.nonzero((b.types < 0) | (b.types >= len(type_map)))[0]
            if len(bad):
                raise DataError(f"{src}: atom {int(bad[0])}: type {int(b.types[bad[0]])} is not in "
                                f"type_map {list(type_map)}")
            symbols = [str(type_map[t]) for t in b.types]
        else:
            symbols = [str(int(t)) for t in b.types]
        info: Dict = {}
        if b.features:
            info["cfg_features"] = b.features
        frames.append(Frame(symbols=symbols, positions=pos, cell=cell, pbc=pbc, energy=b.energy,
                            forces=b.forces, virial=b.virial, weight=b.weight, source=src, info=info))
    return validate_frames(frames, species)


def apply_type_map(frames: Sequence[Frame], type_map: Sequence[str]) -> List[Frame]:
    """Rename integer-named species ("0", "1", ... from an untyped .cfg) to element names in place."""
    for fr in frames:
        new = []
        for a, s in enumerate(fr.symbols):
            try:
                t = int(s)
            except ValueError:
                new.append(s)  # already named
                continue
            if not 0 <= t < len(type_map):
                raise DataError(f"{fr.source or 'frame'}: atom {a}: type {t} is not in type_map "
                                f"{list(type_map)}")
            new.append(str(type_map[t]))
        fr.symbols = new
    return list(frames)


def _num(x: float) -> str:
    return repr(float(x))  # shortest string that reads back to the same double


def write_cfg(frames: Sequence[Frame], path, type_map: Optional[Sequence[str]] = None) -> List[str]:
    """Write frames as an MLIP `.cfg` file; returns the type_map used (type k = type_map[k]).

    Without `type_map`: integer-named symbols are written as those integers, element names get
    types in `species_in(frames)` order (by atomic number).
    """
    validate_frames(frames)
    names = species_in(frames)
    if type_map is None:
        if all(s.isdigit() for s in names):
            type_map = [str(k) for k in range(max(int(s) for s in names) + 1)]
        else:
            type_map = names
    lookup = {s: k for k, s in enumerate(type_map)}
    out: List[str] = []
    for fr in frames:
        for a, s in enumerate(fr.symbols):
            if s not in lookup:
                raise DataError(f"{fr.source or 'frame'}: atom {a}: species '{s}' is not in type_map "
                                f"{list(type_map)}")
        out.append("BEGIN_CFG")
        out.append(" Size")
        out.append(f"    {fr.n_atoms}")
        rows = [fr.cell[d] for d in range(3) if fr.pbc[d]]
        if rows:
            out.append(" Supercell")
            for r in rows:
                out.append("    " + " ".join(f"{_num(x):>22}" for x in r))
        cols = "id type cartes_x cartes_y cartes_z" + (" fx fy fz" if fr.forces is not None else "")
        out.append(" AtomData:  " + cols)
        for a in range(fr.n_atoms):
            vals = list(fr.positions[a]) + (list(fr.forces[a]) if fr.forces is not None else [])
            out.append(f"    {a + 1:6d} {lookup[fr.symbols[a]]:4d} "
                       + " ".join(f"{_num(x):>22}" for x in vals))
        if fr.energy is not None:
            out.append(" Energy")
            out.append(f"    {_num(fr.energy)}")
        if fr.virial is not None:
            w = 0.5 * (fr.virial + fr.virial.T)
            out.append(" PlusStress:  xx yy zz yz xz xy")
            out.append("    " + " ".join(f"{_num(x):>22}" for x in
                                         (w[0, 0], w[1, 1], w[2, 2], w[1, 2], w[0, 2], w[0, 1])))
        if fr.weight != 1.0:
            out.append(" EnergyWeight")
            out.append(f"    {_num(fr.weight)}")
        for name, value in fr.info.get("cfg_features", []):
            out.append(f" Feature   {name}\t{value}".rstrip())
        out.append("END_CFG")
        out.append("")
    atomic_write(os.fspath(path), "\n".join(out))
    return list(type_map)
