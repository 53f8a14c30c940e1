"""Learning-curve and parity plots (PNG), drawn with the non-interactive Agg backend."""
from __future__ import annotations

import csv
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(csv_path: str, png_path: str) -> None:
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
    ax[1].set_title("validation")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def parity_plot(model, graphs: Sequence, png_path: str) -> None:
    from mlip.graph import collate
    from mlip.models.base import predict

    e_ref, e_pred, f_ref, f_pred = [], [], [], []
    for k in range(0, len(graphs), 8):
        chunk = graphs[k: k + 8]
        out = predict(model, collate(chunk), need_virial=False)
        off = 0
        for n, g in enumerate(chunk):
            if g.energy is not None:
                e_ref.append(g.energy / g.n_atoms)
                e_pred.append(float(out["energy"][n]) / g.n_atoms)
            if g.forces is not None:
                f_ref.append(g.forces.numpy().ravel())
                f_pred.append(out["forces"][off: off + g.n_atoms].detach().numpy().ravel())
            off += g.n_atoms
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
    for a, (x, y, lab) in zip(ax, [(e_ref, e_pred, "energy (eV/atom)"),
                                   (np.concatenate(f_ref) if f_ref else [], np.concatenate(f_pred) if f_pred else [],
                                    "force component (eV/Å)")]):
        a.plot(x, y, ".", ms=2)
        if len(x):
            lo, hi = float(np.min(x)), float(np.max(x))
            a.plot([lo, hi], [lo, hi], "k--", lw=0.7)
        a.set_xlabel(f"reference {lab}")
        a.set_ylabel(f"model {lab}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
