"""Make a small Deep Potential model of fcc Cu for the LAMMPS example (a few minutes on 2 cores).

    python make_model.py                 # writes cu_dp.pt
    python make_model.py --steps 50      # quicker, rougher
    python make_model.py --active-set -o cu_dp_al.pt         # + MaxVol active set (extrapolation grade)
    python make_model.py --seed 1 -o cu_dp_1.pt              # another committee member

Labels come from ASE's EMT calculator (rattled, strained and thermalised fcc Cu cells), so nothing
has to be downloaded. The fit is deliberately short: the model is good enough for stable MD in the
example, not for production. A real model comes from `mlip train` + `mlip export`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def make_frames(n_frames: int, seed: int = 0):
    """EMT-labelled 32-atom fcc Cu cells: isotropic strains of -5..+6 %, random shears, rattles."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_frames):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        shear = rng.uniform(-0.02, 0.02, (3, 3))
        strain = np.eye(3) * rng.uniform(0.95, 1.06) + 0.5 * (shear + shear.T)
        a.set_cell(a.cell[:] @ strain, scale_atoms=True)
        a.positions += rng.normal(scale=0.02 + 0.10 * rng.random(), size=a.positions.shape)
        a.calc = EMT()
        virial = -a.get_stress(voigt=False) * a.get_volume()  # W = -V sigma (LAMMPS sign)
        frames.append((a.copy(), a.get_potential_energy(), a.get_forces(), virial))
    return frames


def merge(graphs, idx):
    """Disjoint union of several frame graphs (one model call per batch)."""
    sp, ei, ev, offs = [], [], [], [0]
    for k in idx:
        g = graphs[k]
        sp.append(g[0])
        ei.append(g[1] + offs[-1])
        ev.append(g[2])
        offs.append(offs[-1] + len(g[0]))
    return torch.cat(sp), torch.cat(ei, 1), torch.cat(ev), offs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", default="cu_dp.pt")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--seed", type=int, default=0,
                    help="initial weights and batch order (committee members differ only by this)")
    ap.add_argument("--active-set", action="store_true",
                    help="store a MaxVol active set of the training cells in the export: pair_style mlip "
                         "then reports the extrapolation grade gamma (compute mlip/gamma, gamma_select, "
                         "gamma_break; see in.cu_active)")
    args = ap.parse_args()

    from mlip.active.grade import build_active_set, export_graded
    from mlip.models.base import forces_virials_from_edges
    from mlip.models.deepmd import DeepPotSeA
    from mlip.neighbors import neighbor_list

    torch.manual_seed(args.seed)
    t0 = time.time()
    frames = make_frames(args.frames)
    model = DeepPotSeA(["Cu"], rcut=5.0, rcut_smth=0.5, sel=[60], neuron=(8, 16, 32), axis_neuron=8,
                       fitting_neuron=(32, 32), seed=args.seed).double()
    graphs = []
    for atoms, e, f, w in frames:
        ei, _, ev = neighbor_list(atoms.get_positions(), atoms.cell[:], atoms.pbc, model.cutoff)
        graphs.append((torch.zeros(len(atoms), dtype=torch.long), torch.from_numpy(ei).long(),
                       torch.from_numpy(ev).double(), float(e), torch.from_numpy(f).double(),
                       torch.from_numpy(w).double()))
    sp_all, ei_all, ev_all, _ = merge(graphs, range(len(graphs)))
    model.fit_statistics(sp_all, ei_all, ev_all)
    e_per_atom = float(np.mean([g[3] / len(g[0]) for g in graphs]))
    model.set_energy_bias(torch.tensor([e_per_atom]))

    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(1e-4 / 5e-3) ** (1.0 / args.steps))
    rng = np.random.default_rng(1 + args.seed)
    for step in range(args.steps):
        batch = rng.choice(len(graphs), size=8, replace=False)
        sp, ei, ev, offs = merge(graphs, batch)
        vec = ev.clone().requires_grad_(True)
        atom_e = model(sp, ei, vec)
        (g,) = torch.autograd.grad(atom_e.sum(), vec, create_graph=True)
        f, edge_w = forces_virials_from_edges(g, ei, vec, len(sp))
        loss = torch.zeros((), dtype=torch.float64)
        for m, b in enumerate(batch):
            lo, hi = offs[m], offs[m + 1]
            n = hi - lo
            e_ref, f_ref, w_ref = graphs[b][3], graphs[b][4], graphs[b][5]
            em = atom_e[lo:hi].sum()
            edges = (ei[0] >= lo) & (ei[0] < hi)
            wm = edge_w[edges].sum(0)
            loss = loss + 10.0 * ((em - e_ref) / n) ** 2 + ((f[lo:hi] - f_ref) ** 2).mean() \
                + 1.0 * (((wm - w_ref) / n) ** 2).mean()
        loss = loss / len(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3e}  ({time.time() - t0:.0f} s)", flush=True)

    model.eval()
    errs_e, errs_f = [], []
    for sp, ei, ev, e_ref, f_ref, _ in graphs:
        vec = ev.clone().requires_grad_(True)
        e = model(sp, ei, vec).sum()
        (g,) = torch.autograd.grad(e, vec)
        f, _ = forces_virials_from_edges(g, ei, vec, len(sp))
        errs_e.append(abs(e.item() - e_ref) / len(sp))
        errs_f.append(float(((f - f_ref) ** 2).mean().sqrt()))
    print(f"training-set MAE energy {np.mean(errs_e) * 1000:.1f} meV/atom, RMSE forces {np.mean(errs_f):.3f} eV/A")
    aset = None
    if args.active_set:
        aset = build_active_set(model, [f[0] for f in frames])
        print(f"active set: {aset.rank} neighbourhoods of {sum(len(f[0]) for f in frames)} training atoms")
    export_graded(model, args.output, aset, dtype=args.dtype)
    print(f"wrote {args.output} ({args.dtype}, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
