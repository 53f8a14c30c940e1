"""Print-only CPU speed benchmark of the NequIP-style model (µs/atom, energy + forces + virial).

Runs the TorchScript export (what the ASE calculator / LAMMPS engine runs) on a ~1000-atom periodic
two-species fcc-like system, single thread, float32 and float64.

    python benchmarks/bench_nequip_speed.py [--l-max 2] [--features 32] [--layers 3] [--cutoff 5.0]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch


def neighbor_list(pos, cell, cutoff):
    try:
        from mlip.neighbors import neighbor_list as nl  # C++ list once it has landed

        ei, _, ev = nl(pos, cell, np.array([True] * 3), cutoff)
        return np.asarray(ei), np.asarray(ev)
    except Exception:
        from ase.neighborlist import primitive_neighbor_list

        i, j, d = primitive_neighbor_list("ijD", [True] * 3, cell, pos, cutoff, self_interaction=False)
        return np.stack([i, j]), d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--l-max", type=int, default=2)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--parity", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mlip.export import export_model
    from mlip.models.nequip import NequIP

    rng = np.random.default_rng(0)
    a = 3.61  # fcc Cu-like density
    base = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    n = 6  # 6x6x7 cells * 4 = 1008 atoms
    grid = np.array([[i, j, k] for i in range(n) for j in range(n) for k in range(n + 1)], float)
    frac = (grid[:, None, :] + base[None]).reshape(-1, 3)
    cell = np.diag([n * a, n * a, (n + 1) * a])
    pos = frac * a + rng.normal(0, 0.1, frac.shape)
    ei, ev = neighbor_list(pos, cell, args.cutoff)
    n_atoms = len(pos)
    species = torch.tensor(rng.integers(0, 2, n_atoms))
    torch.manual_seed(0)
    model = NequIP(["Cu", "Ni"], cutoff=args.cutoff, l_max=args.l_max, num_features=args.features,
                   num_layers=args.layers, parity=bool(args.parity), avg_num_neighbors=ei.shape[1] / n_atoms)
    print(f"atoms {n_atoms}, edges {ei.shape[1]} ({ei.shape[1] / n_atoms:.1f}/atom), cutoff {args.cutoff}, "
          f"l_max {args.l_max}, features {args.features}, layers {args.layers}, parity {bool(args.parity)}, "
          f"threads {args.threads}")
    print(f"irreps per layer: {model.irreps_layers}; parameters {sum(p.numel() for p in model.parameters())}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float64"):
            path = os.path.join(tmp, f"m_{dtype}.pt")
            export_model(model, path, dtype)
            m = torch.jit.load(path)
            t = getattr(torch, dtype)
            e_idx = torch.tensor(ei)
            vec = torch.tensor(ev, dtype=t)
            for _ in range(2):  # warm-up (TorchScript profiling runs)
                m(species, e_idx, vec, n_atoms, False)
            times, cpu = [], []
            for _ in range(args.reps):
                t0, c0 = time.perf_counter(), time.process_time()
                m(species, e_idx, vec, n_atoms, False)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            best = min(times)
            print(f"{dtype}: {best * 1e3:8.1f} ms/step  {best / n_atoms * 1e6:8.1f} µs/atom wall (best of "
                  f"{args.reps}; median {np.median(times) / n_atoms * 1e6:.1f}), "
                  f"{min(cpu) / n_atoms * 1e6:.1f} µs/atom CPU")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
