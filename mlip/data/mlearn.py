"""mlearn JSON (Zuo et al., J. Phys. Chem. A 124, 731 (2020)) -> Frames.

Each file is a JSON list of records: `structure` (a pymatgen Structure dict: `lattice.matrix` rows are
the cell vectors, `sites[k].xyz` Cartesian Å, `sites[k].species[0].element`), `outputs.energy` (eV),
`outputs.forces` (N×3, eV/Å), `outputs.virial_stress` (6 numbers, kbar), plus `group` and
`description`, kept in `Frame.info`.

Stress sign, unit and component order — determined model-free from the data
-------------------------------------------------------------------------------
The `Elastic` group holds strained copies of one relaxed crystal (strain steps of 0.02). For two such
structures with cells L1, L2 (rows) the deformation is D = sym((L2 − L1)ᵀ · L̄⁻ᵀ), and to first order
    E2 − E1 = V̄ σ̄ : D,     σ = (1/V) ∂E/∂ε  (the physical, ASE-sign stress).
Fitting E2 − E1 = c · V̄ s̄ : D / 1602.1766208 over all neighbouring pairs (s = the stored 6 numbers
made a symmetric 3×3 in kbar, 1 eV/Å³ = 1602.1766208 kbar, s̄ the mean of the pair) gives
(`elastic_stress_check`: all pairs of Elastic structures with max |D| ≤ 0.03; numbers from
/work/shared/data/mlearn/*/training.json):

    Mo (259 pairs): c = −1.003, rms residual 0.023 eV (rms ΔE 1.04 eV) with the order
        xx yy zz xy xz yz; VASP's order xx yy zz xy yz xz gives rms residual 0.50 eV (the xz/yz
        shear strains are then predicted to cost ≈ 0 eV instead of 0.1–1.0 eV per step).
    Si (108 pairs): c = −0.997, rms residual 0.017 eV (rms ΔE 2.01 eV) with VASP's order
        xx yy zz xy yz xz; the swapped order gives rms residual 1.49 eV.

So:
- unit: kbar (|c| = 1.00 ± 0.003 with the kbar → eV/Å³ factor; GPa or eV/Å³ would be off by 10×/1600×);
- sign: c = −1, i.e. s = −σ: the stored numbers are VASP's "positive = compressive / pressure"
  stress, s = W/V with W our LAMMPS-sign virial. Hence **W = +V · s / 1602.1766208 eV**
  (e.g. Mo compressed 2 % along x: s_xx = +105.8 kbar → W_xx = +55.5 eV, ASE stress_xx = −10.6 GPa;
  stretched 2 %: s_xx = −86.1 kbar → W_xx = −47.0 eV);
- order: NOT the same in both sets. Si uses VASP's xx yy zz xy yz xz; Mo's last two are swapped
  (xx yy zz xy xz yz): its "mode 5" strain (b gains a z component, a yz shear) shows up in the 6th
  number and "mode 6" (a gains z, an xz shear) in the 5th, and only that assignment conserves energy.

`read_mlearn(..., voigt_order="auto")` therefore determines the order of each file from its own
`Elastic` records with this energy test (shear permutations only; the diagonal is unambiguous); when a
file has no decisive records (Mo/test.json only has xx and xy strains) it uses the `.json` files
next to it (the training set of the same element), and falls back to VASP's order when nothing is
decisive. Pass `voigt_order="xx yy zz xy yz xz"` (or any permutation of the shear names) to force it.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mlip.data.frame import DataError, Frame, validate_frames

KBAR_PER_EV_A3 = 1602.1766208  # 1 eV/Å³ = 160.21766208 GPa = 1602.1766208 kbar
VASP_ORDER = "xx yy zz xy yz xz"
_IDX = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "xy": (0, 1), "yx": (0, 1), "yz": (1, 2),
        "zy": (1, 2), "xz": (0, 2), "zx": (0, 2)}


def parse_order(order: str) -> Tuple[Tuple[int, int], ...]:
    names = order.replace(",", " ").split()
    if len(names) != 6 or any(n not in _IDX for n in names) or \
            len({tuple(sorted(_IDX[n])) for n in names}) != 6:
        raise ValueError(f"voigt_order must name the 6 components once each, e.g. '{VASP_ORDER}', "
                         f"got {order!r}")
    return tuple(_IDX[n] for n in names)


def stress6_to_matrix(s6, order: str = VASP_ORDER) -> np.ndarray:
    m = np.zeros((3, 3))
    for v, (a, b) in zip(s6, parse_order(order)):
        m[a, b] = m[b, a] = float(v)
    return m


def kbar_stress_to_virial(s6, volume: float, order: str = VASP_ORDER) -> np.ndarray:
    """mlearn/VASP stress (kbar, positive = compressive) -> LAMMPS-sign virial W (eV)."""
    return stress6_to_matrix(s6, order) * volume / KBAR_PER_EV_A3


# ---------------------------------------------------------------------- parsing
def _load_json(path: Path):
    try:
        with open(path, "r") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def _record_to_frame(rec, where: str) -> Tuple[Frame, Optional[List[float]]]:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record is a {type(rec).__name__}, expected an object")
    try:
        st = rec["structure"]
        cell = np.array(st["lattice"]["matrix"], dtype=float)
        sites = st["sites"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{where}: missing structure field {exc}") from None
    except ValueError:
        raise DataError(f"{where}: lattice.matrix is not a 3×3 array of numbers") from None
    if cell.shape != (3, 3):
        raise DataError(f"{where}: lattice.matrix has shape {cell.shape}, expected (3, 3)")
    symbols, pos = [], []
    for k, site in enumerate(sites):
        try:
            sp = site["species"]
            if len(sp) != 1 or float(sp[0].get("occu", 1.0)) != 1.0:
                raise DataError(f"{where}: atom {k}: partial occupancy / disordered site {sp}")
            symbols.append(str(sp[0]["element"]))
            if "xyz" in site:
                pos.append([float(x) for x in site["xyz"]])
            else:
                pos.append((np.array(site["abc"], dtype=float) @ cell).tolist())
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(f"{where}: atom {k}: malformed site ({type(exc).__name__}: {exc})") from None
    out = rec.get("outputs") or {}
    if not isinstance(out, dict):
        raise DataError(f"{where}: 'outputs' is not an object")
    energy = out.get("energy")
    forces = out.get("forces")
    s6 = out.get("virial_stress")
    try:
        energy = None if energy is None else float(energy)
        forces = None if forces is None else np.array(forces, dtype=float)
        if s6 is not None:
            s6 = [float(x) for x in s6]
    except (TypeError, ValueError):
        raise DataError(f"{where}: outputs (energy/forces/virial_stress) are not numeric") from None
    if s6 is not None and len(s6) != 6:
        raise DataError(f"{where}: virial_stress has {len(s6)} numbers, expected 6")
    info = {k: rec[k] for k in ("group", "description", "tag") if k in rec}
    fr = Frame(symbols=symbols, positions=np.array(pos, dtype=float).reshape(-1, 3), cell=cell,
               pbc=np.array([True, True, True]), energy=energy, forces=forces, source=where, info=info)
    if s6 is not None:
        fr.info["virial_stress_kbar"] = list(s6)
    return fr, s6


# ---------------------------------------------------------------------- model-free stress check
def _elastic_pairs(frames: Sequence[Frame], max_strain: float = 0.03):
    """Pairs of strained copies of the same structure (Elastic group), as (frame1, frame2, D)."""
    el = [f for f in frames if f.info.get("group") == "Elastic" and f.energy is not None
          and "virial_stress_kbar" in f.info]
    frac = {}
    for f in el:
        try:
            frac[id(f)] = f.positions @ np.linalg.inv(f.cell)
        except np.linalg.LinAlgError:
            pass
    el = [f for f in el if id(f) in frac]
    pairs = []
    for f1, f2 in itertools.combinations(el, 2):
        if f1.n_atoms != f2.n_atoms or f1.symbols != f2.symbols:
            continue
        lm = 0.5 * (f1.cell + f2.cell)
        try:
            d = (f2.cell - f1.cell).T @ np.linalg.inv(lm.T)
        except np.linalg.LinAlgError:
            continue
        fr1, fr2 = frac[id(f1)], frac[id(f2)]
        d = 0.5 * (d + d.T)
        if not (1e-6 < np.abs(d).max() <= max_strain):
            continue
        df = fr2 - fr1
        if np.abs(df - np.round(df)).max() > 0.05:
            continue
        pairs.append((f1, f2, d))
    return pairs


def elastic_stress_check(frames: Sequence[Frame], voigt_order: str = VASP_ORDER, _pairs=None
                         ) -> Dict[str, float]:
    """Fit E2 − E1 = c · V̄ s̄:D / 1602.18 over neighbouring Elastic pairs (see module docstring).

    Returns {"slope": c, "rms_residual": eV, "rms_dE": eV, "n_pairs", "max_shear_D"}. A correct
    reading of VASP-sign kbar stresses gives c ≈ −1 with a small residual.
    """
    pairs = _elastic_pairs(frames) if _pairs is None else _pairs
    if not pairs:
        return {"slope": float("nan"), "rms_residual": float("nan"), "rms_dE": float("nan"),
                "n_pairs": 0, "max_shear_D": 0.0}
    pred, de, shear = [], [], 0.0
    for f1, f2, d in pairs:
        s = 0.5 * (stress6_to_matrix(f1.info["virial_stress_kbar"], voigt_order)
                   + stress6_to_matrix(f2.info["virial_stress_kbar"], voigt_order))
        vol = abs(np.linalg.det(0.5 * (f1.cell + f2.cell)))
        pred.append(vol * float(np.sum(s * d)) / KBAR_PER_EV_A3)
        de.append(f2.energy - f1.energy)
        shear = max(shear, abs(d[0, 2]), abs(d[1, 2]), abs(d[0, 1]))
    pred, de = np.array(pred), np.array(de)
    denom = float(pred @ pred)
    c = float(pred @ de) / denom if denom > 0 else float("nan")
    res = de - c * pred
    return {"slope": c, "rms_residual": float(np.sqrt(np.mean(res ** 2))),
            "rms_dE": float(np.sqrt(np.mean(de ** 2))), "n_pairs": len(pairs), "max_shear_D": shear}


def _candidate_orders() -> List[str]:
    return ["xx yy zz " + " ".join(p) for p in itertools.permutations(["xy", "yz", "xz"])]


def detect_voigt_order(frames: Sequence[Frame]) -> Optional[str]:
    """The shear order whose energy test fits clearly best (residual < half the runner-up's and
    slope within 10 % of −1); None when the Elastic records cannot decide."""
    pairs = _elastic_pairs(frames)
    scores = []
    for order in _candidate_orders():
        r = elastic_stress_check(frames, order, _pairs=pairs)
        if r["n_pairs"] == 0:
            return None
        scores.append((r["rms_residual"], order, r["slope"]))
    scores.sort()
    (best, order, slope), (second, _, _) = scores[0], scores[1]
    if best < 0.5 * second and abs(slope + 1.0) < 0.1:
        return order
    return None


@functools.lru_cache(maxsize=64)
def _detect_file(path: str, mtime: float) -> Optional[str]:
    try:
        data = _load_json(Path(path))
        frames = []
        for i, rec in enumerate(data if isinstance(data, list) else []):
            if isinstance(rec, dict) and rec.get("group") == "Elastic":
                frames.append(_record_to_frame(rec, f"{path}:{i}")[0])
        return detect_voigt_order(frames)
    except DataError:
        return None


def _auto_order(path: Path, frames: Sequence[Frame]) -> Tuple[str, str]:
    """(order, how it was found)."""
    order = detect_voigt_order(frames)
    if order:
        return order, f"Elastic records of {path.name}"
    for sib in sorted(path.parent.glob("*.json")):
        if sib.resolve() == path.resolve():
            continue
        order = _detect_file(str(sib.resolve()), sib.stat().st_mtime)
        if order:
            return order, f"Elastic records of {sib.name}"
    return VASP_ORDER, "default (VASP order; no decisive Elastic records)"


def read_mlearn(path, species: Optional[Sequence[str]] = None, voigt_order: str = "auto"
                ) -> List[Frame]:
    """Read an mlearn JSON file; virials converted to W = V·s/1602.1766208 eV (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no records")
    frames, stresses = [], []
    for i, rec in enumerate(data):
        fr, s6 = _record_to_frame(rec, f"{path}:{i}")
        frames.append(fr)
        stresses.append(s6)
    validate_frames(frames, species)  # shapes first, so the volume below is meaningful
    if any(s is not None for s in stresses):
        if voigt_order == "auto":
            order, how = _auto_order(path, frames)
        else:
            parse_order(voigt_order)
            order, how = voigt_order, "given"
        for fr, s6 in zip(frames, stresses):
            if s6 is not None:
                fr.virial = kbar_stress_to_virial(s6, fr.volume, order)
                fr.info["mlearn_voigt_order"] = order
                fr.info["mlearn_voigt_order_from"] = how
    return validate_frames(frames, species)
