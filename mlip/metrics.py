"""Error metrics shared by training validation and `mlip test`: collect predictions and labels frame by
frame, then reduce. Energies are compared per atom; forces per component, per species and relative;
virials per atom (eV/atom) and as stress (GPa)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

EV_A3_TO_GPA = 160.21766208


def _voigt_gpa(virial: np.ndarray, volume: float) -> np.ndarray:
    """Stress = −W/V in GPa, ASE Voigt order xx yy zz yz xz xy."""
    s = -np.asarray(virial, dtype=float).reshape(3, 3) / volume * EV_A3_TO_GPA
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


class ErrorAccumulator:
    """Predictions against labels, frame by frame. Frames may carry a data group (mlearn `group`,
    extxyz `config_type`): each group also gets its own accumulator, so reports and parity plots can
    show where a model is weak."""

    def __init__(self, species: Sequence[str]) -> None:
        self.species = list(species)
        self.de: List[float] = []
        self.df: List[np.ndarray] = []
        self.fref: List[np.ndarray] = []
        self.fspec: List[np.ndarray] = []
        self.dv_atom: List[np.ndarray] = []
        self.dstress: List[np.ndarray] = []
        # parity data: energy per atom (ref, pred, group); force components (ref, pred, species index
        # per component); stress in GPa, Voigt xx yy zz yz xz xy (ref, pred, group)
        self.parity_e: List[Tuple[float, float, str]] = []
        self.parity_f: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.parity_s: List[Tuple[np.ndarray, np.ndarray, str]] = []
        self.groups: Dict[str, "ErrorAccumulator"] = {}

    def add(self, species_idx: np.ndarray, e_pred: float, f_pred: np.ndarray, v_pred: Optional[np.ndarray],
            e_ref: Optional[float], f_ref: Optional[np.ndarray], v_ref: Optional[np.ndarray],
            volume: Optional[float], group: str = "") -> None:
        """One frame: predicted energy (eV), forces (N,3), virial (3,3 or None) and the labels (None
        where the frame has none); `volume` (Å³, periodic cells) turns virials into stresses."""
        if group:
            self.groups.setdefault(group, ErrorAccumulator(self.species)).add(
                species_idx, e_pred, f_pred, v_pred, e_ref, f_ref, v_ref, volume)
        n = len(species_idx)
        if e_ref is not None:
            self.de.append((e_pred - e_ref) / n)
            self.parity_e.append((e_ref / n, e_pred / n, group))
        if f_ref is not None:
            self.df.append(np.asarray(f_pred) - f_ref)
            self.fref.append(np.asarray(f_ref))
            self.fspec.append(np.asarray(species_idx))
            self.parity_f.append((np.asarray(f_ref).ravel(), np.asarray(f_pred).ravel(),
                                  np.repeat(np.asarray(species_idx), 3)))
        if v_ref is not None and v_pred is not None:
            dv = (np.asarray(v_pred) - np.asarray(v_ref)).reshape(9)
            self.dv_atom.append(dv / n)
            if volume:
                self.dstress.append(-dv / volume * EV_A3_TO_GPA)
                self.parity_s.append((_voigt_gpa(v_ref, volume), _voigt_gpa(v_pred, volume), group))

    def merge(self, other: "ErrorAccumulator") -> "ErrorAccumulator":
        """Add the frames of `other` (e.g. another rank's share of a validation set) to this one."""
        for name in ("de", "df", "fref", "fspec", "dv_atom", "dstress", "parity_e", "parity_f", "parity_s"):
            getattr(self, name).extend(getattr(other, name))
        for g, acc in other.groups.items():
            self.groups.setdefault(g, ErrorAccumulator(self.species)).merge(acc)
        return self

    def summary(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        if self.de:
            de = np.asarray(self.de)
            out.update(energy_rmse=float(np.sqrt(np.mean(de**2))), energy_mae=float(np.mean(np.abs(de))),
                       energy_max=float(np.max(np.abs(de))), n_frames=len(de))
        if self.df:
            df = np.concatenate(self.df)
            fr = np.concatenate(self.fref)
            sp = np.concatenate(self.fspec)
            out.update(force_rmse=float(np.sqrt(np.mean(df**2))), force_mae=float(np.mean(np.abs(df))),
                       force_max=float(np.max(np.abs(df))),
                       force_relative=float(np.sqrt(np.sum(df**2) / max(np.sum(fr**2), 1e-300))))
            for c, ax in enumerate("xyz"):
                out[f"force_rmse_{ax}"] = float(np.sqrt(np.mean(df[:, c] ** 2)))
            for k, s in enumerate(self.species):
                m = sp == k
                if m.any():
                    out[f"force_rmse_{s}"] = float(np.sqrt(np.mean(df[m] ** 2)))
                    out[f"force_mae_{s}"] = float(np.mean(np.abs(df[m])))
            out["n_atoms"] = int(len(df))
        if self.dv_atom:
            dv = np.asarray(self.dv_atom)
            out["virial_rmse_per_atom"] = float(np.sqrt(np.mean(dv**2)))
            out["virial_mae_per_atom"] = float(np.mean(np.abs(dv)))
        if self.dstress:
            ds = np.asarray(self.dstress)
            out["stress_rmse_gpa"] = float(np.sqrt(np.mean(ds**2)))
            out["stress_mae_gpa"] = float(np.mean(np.abs(ds)))
        return out

    def group_summaries(self) -> Dict[str, Dict[str, Any]]:
        """{group: summary} for the frames that carry a data group (empty when none does)."""
        return {g: acc.summary() for g, acc in sorted(self.groups.items())}


def format_summary(s: Dict[str, float]) -> str:
    lines = []
    if "energy_rmse" in s:
        lines.append(f"energy/atom  RMSE {s['energy_rmse']*1e3:9.3f} meV  MAE {s['energy_mae']*1e3:9.3f} meV"
                     f"  max {s['energy_max']*1e3:9.3f} meV   ({s['n_frames']} frames)")
    if "force_rmse" in s:
        lines.append(f"forces       RMSE {s['force_rmse']:9.4f} eV/Å MAE {s['force_mae']:9.4f} eV/Å"
                     f" max {s['force_max']:8.4f}  relative {s['force_relative']:.4f}  ({s['n_atoms']} atoms)")
        sp = [k[len("force_rmse_"):] for k in s if k.startswith("force_rmse_") and k[len("force_rmse_"):] not in ("x", "y", "z")]
        if sp:
            lines.append("  per species RMSE: " + ", ".join(f"{x} {s['force_rmse_'+x]:.4f}" for x in sp))
    if "virial_rmse_per_atom" in s:
        extra = f"   stress RMSE {s['stress_rmse_gpa']:.4f} GPa" if "stress_rmse_gpa" in s else ""
        lines.append(f"virial/atom  RMSE {s['virial_rmse_per_atom']*1e3:9.3f} meV{extra}")
    return "\n".join(lines)
