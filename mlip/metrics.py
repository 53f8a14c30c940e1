"""Error metrics shared by training validation and `mlip test`: collect predictions and labels frame by
frame, then reduce. Energies are compared per atom; forces per component, per species and relative;
virials per atom (eV/atom) and as stress (GPa)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

EV_A3_TO_GPA = 160.21766208


class ErrorAccumulator:
    def __init__(self, species: Sequence[str]) -> None:
        self.species = list(species)
        self.de: List[float] = []
        self.df: List[np.ndarray] = []
        self.fref: List[np.ndarray] = []
        self.fspec: List[np.ndarray] = []
        self.dv_atom: List[np.ndarray] = []
        self.dstress: List[np.ndarray] = []
        self.parity_e: List[tuple] = []
        self.parity_f: List[tuple] = []

    def add(self, species_idx: np.ndarray, e_pred: float, f_pred: np.ndarray, v_pred: Optional[np.ndarray],
            e_ref: Optional[float], f_ref: Optional[np.ndarray], v_ref: Optional[np.ndarray],
            volume: Optional[float]) -> None:
        n = len(species_idx)
        if e_ref is not None:
            self.de.append((e_pred - e_ref) / n)
            self.parity_e.append((e_ref / n, e_pred / n))
        if f_ref is not None:
            self.df.append(np.asarray(f_pred) - f_ref)
            self.fref.append(np.asarray(f_ref))
            self.fspec.append(np.asarray(species_idx))
            self.parity_f.append((np.asarray(f_ref).ravel(), np.asarray(f_pred).ravel()))
        if v_ref is not None and v_pred is not None:
            dv = (np.asarray(v_pred) - np.asarray(v_ref)).reshape(9)
            self.dv_atom.append(dv / n)
            if volume:
                self.dstress.append(-dv / volume * EV_A3_TO_GPA)

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
        return out


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
