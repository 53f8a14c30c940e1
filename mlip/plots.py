"""The pictures a person checks first (PNG, non-interactive Agg backend): parity of a model against
labels (`mlip test --plot`, end of `mlip train`), the learning curve, and an MD run's temperature,
energy, pressure and volume against time (`mlip md --plot`).

Every figure function returns the axis labels it drew, so tests (and scripts) can check a picture
without reading pixels."""
from __future__ import annotations

import csv
from typing import Dict, List, Sequence, Tuple

import numpy as np

from mlip.metrics import ErrorAccumulator

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png_path: str) -> None:
    """The PNG written atomically (a failed write is one `WriteError` line, no partial file)."""
    from mlip.io.safe_write import atomic_write_buffered

    atomic_write_buffered(png_path, lambda buf: fig.savefig(buf, format="png", dpi=110))


def _errors_text(ref: np.ndarray, pred: np.ndarray, unit: str, scale: float = 1.0) -> str:
    d = (np.asarray(pred) - np.asarray(ref)) * scale
    return f"MAE {np.mean(np.abs(d)):.3g} {unit}\nRMSE {np.sqrt(np.mean(d**2)):.3g} {unit}\nN {d.size}"


def _parity_panel(ax, ref: np.ndarray, pred: np.ndarray, colour_by: np.ndarray, quantity: str, unit: str,
                  err_unit: str, err_scale: float) -> Tuple[str, str]:
    """One parity panel: points coloured by `colour_by` (species or data group), the y = x line and
    the panel's MAE/RMSE. Returns (xlabel, ylabel)."""
    labels = sorted(set(colour_by.tolist()), key=str)
    for lab in labels:
        m = colour_by == lab
        ax.plot(ref[m], pred[m], ".", ms=2.5, alpha=0.6, label=str(lab) if str(lab) else "(no group)")
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    pad = 0.02 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.7)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.text(0.04, 0.96, _errors_text(ref, pred, err_unit, err_scale), transform=ax.transAxes, va="top",
            fontsize=8, family="monospace", bbox=dict(fc="white", ec="0.7", alpha=0.85))
    if 1 < len(labels) <= 20:
        ax.legend(fontsize=7, markerscale=3, loc="lower right")
    xl, yl = f"reference {quantity} ({unit})", f"model {quantity} ({unit})"
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    return xl, yl


def parity_figure(acc: ErrorAccumulator, png_path: str, title: str = "") -> List[Tuple[str, str]]:
    """Energy-per-atom, force-component and (where labelled) stress parity panels of `acc`, written to
    `png_path`. Energies and stresses are coloured by data group when the frames carry one, forces by
    species. Returns the (xlabel, ylabel) of each panel drawn."""
    panels = []
    if acc.parity_e:
        ref, pred, grp = (np.asarray(c) for c in zip(*acc.parity_e))
        panels.append((ref.astype(float), pred.astype(float), grp, "energy", "eV/atom", "meV/atom", 1e3))
    if acc.parity_f:
        ref, pred, spec = (np.concatenate(c) for c in zip(*acc.parity_f))
        names = np.asarray([acc.species[int(i)] for i in spec]) if len(spec) else spec
        panels.append((ref, pred, names, "force component", "eV/Å", "eV/Å", 1.0))
    if acc.parity_s:
        ref = np.concatenate([r for r, _, _ in acc.parity_s])
        pred = np.concatenate([p for _, p, _ in acc.parity_s])
        grp = np.repeat([g for _, _, g in acc.parity_s], 6)
        if not any(grp):  # no data groups: tell normal from shear components instead
            grp = np.tile(["normal (xx yy zz)"] * 3 + ["shear (yz xz xy)"] * 3, len(acc.parity_s))
        panels.append((ref, pred, grp, "stress component", "GPa", "GPa", 1.0))
    if not panels:
        raise ValueError("no labelled energies, forces or stresses to draw a parity plot from")
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    labels = [_parity_panel(ax, *p) for ax, p in zip(axes[0], panels)]
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, png_path)
    plt.close(fig)
    return labels


def learning_curve(csv_path: str, png_path: str) -> List[Tuple[str, str]]:
    """Training loss and validation errors against step, from a run's metrics.csv."""
    steps, loss, vs, ve, vf = [], [], [], [], []
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            steps.append(int(row["step"]))
            loss.append(float(row["loss"]))
            if row.get("val_force_rmse"):
                vs.append(int(row["step"]))
                ve.append(float(row["val_energy_rmse"] or "nan") * 1e3)
                vf.append(float(row["val_force_rmse"]))
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].semilogy(steps, loss, lw=0.8)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("training loss")
    ax[1].semilogy(vs, ve, "o-", ms=3, label="energy RMSE (meV/atom)")
    ax[1].semilogy(vs, vf, "s-", ms=3, label="force RMSE (eV/Å)")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation RMSE")
    ax[1].legend()
    fig.tight_layout()
    _save(fig, png_path)
    plt.close(fig)
    return [("step", "training loss"), ("step", "validation RMSE")]


def read_md_log(path: str) -> Dict[str, np.ndarray]:
    """The columns of an `mlip md` log (header line `# name name …`) as arrays."""
    with open(path) as fh:
        header = fh.readline()
        if not header.startswith("#"):
            raise ValueError(f"{path}: not an mlip md log (no '# column …' header)")
        names = header[1:].split()
        rows = [line.split() for line in fh if line.strip() and not line.startswith("#")]
    data = np.asarray(rows, dtype=float).reshape(-1, len(names))
    return {n: data[:, i] for i, n in enumerate(names)}


MD_PANELS = (("temperature_K", "temperature (K)"), ("etot_eV", "total energy (eV)"),
             ("pressure_GPa", "pressure (GPa)"), ("volume_A3", "volume (Å³)"))


def md_figure(log_path: str, png_path: str, title: str = "") -> List[Tuple[str, str]]:
    """Temperature, total energy, pressure and volume against time from an `mlip md` log. A column the
    log lacks (pressure of a non-periodic system) is left out."""
    cols = read_md_log(log_path)
    if "time_fs" not in cols or len(cols["time_fs"]) == 0:
        raise ValueError(f"{log_path}: no MD rows to plot")
    panels = [(k, lab) for k, lab in MD_PANELS if k in cols and np.isfinite(cols[k]).any()]
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.0 * len(panels)), sharex=True, squeeze=False)
    t = cols["time_fs"] / 1000.0
    labels = []
    for ax, (k, lab) in zip(axes[:, 0], panels):
        ax.plot(t, cols[k], lw=0.9)
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        labels.append(("time (ps)", lab))
    axes[-1, 0].set_xlabel("time (ps)")
    if title:
        axes[0, 0].set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, png_path)
    plt.close(fig)
    return labels
