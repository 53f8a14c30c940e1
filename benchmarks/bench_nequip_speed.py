"""Print-only CPU speed benchmark of the NequIP-style model (µs/atom, energy + forces + virial).

1. periodic ~1000-atom two-species fcc-like system through the TorchScript export (what the ASE
   calculator runs), float32 and float64;
2. the LAMMPS situation: the same 1000 atoms as locals plus every ghost out to interaction_range
   (num_layers * cutoff), energy of the locals only — the export as is (all nodes updated) and the
   model's pruned evaluation (`forward(..., n_local)`: block k only updates atoms within
   num_layers - 1 - k edges of a local one).

Single thread by default. The machine may be shared: wall and CPU time are both printed, with the
load average. `--mallopt` keeps freed memory in the process (glibc mallopt) instead of returning
it to the kernel and page-faulting it back in on every step, which the C++ engine could also do.

    python benchmarks/bench_nequip_speed.py [--l-max 2] [--features 32] [--layers 3] [--cutoff 5.0]
"""
import argparse
import ctypes
import os
import tempfile
import time

import numpy as np
import torch


def neighbor_list(pos, cell, pbc, cutoff):
    try:
        from mlip.neighbors import neighbor_list as nl  # C++ list

        ei, _, ev = nl(pos, cell, np.array(pbc), cutoff)
        return np.asarray(ei), np.asarray(ev)
    except ImportError:
        from ase.neighborlist import primitive_neighbor_list

        i, j, d = primitive_neighbor_list("ijD", pbc, cell, pos, cutoff, self_interaction=False)
        return np.stack([i, j]), d


def timed(fn, reps):
    fn()
    fn()  # warm-up (TorchScript profiling runs)
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), float(np.median(wall)), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--l-max", type=int, default=2)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--parity", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--no-ghosts", action="store_true", help="skip the LAMMPS-like ghost-shell case")
    ap.add_argument("--mallopt", action="store_true", help="glibc: no mmap/trim of freed memory")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mallopt:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD (max 32 MiB)
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
    ei, ev = neighbor_list(pos, cell, [True] * 3, args.cutoff)
    n_atoms = len(pos)
    species = torch.tensor(rng.integers(0, 2, n_atoms))
    torch.manual_seed(0)
    model = NequIP(["Cu", "Ni"], cutoff=args.cutoff, l_max=args.l_max, num_features=args.features,
                   num_layers=args.layers, parity=bool(args.parity), avg_num_neighbors=ei.shape[1] / n_atoms)
    print(f"atoms {n_atoms}, edges {ei.shape[1]} ({ei.shape[1] / n_atoms:.1f}/atom), cutoff {args.cutoff}, "
          f"l_max {args.l_max}, features {args.features}, layers {args.layers}, parity {bool(args.parity)}, "
          f"threads {args.threads}, mallopt {args.mallopt}")
    print(f"irreps per layer: {model.irreps_layers}; parameters {sum(p.numel() for p in model.parameters())}")

    # LAMMPS-like graph: locals first, then all periodic images within interaction_range of the box
    rng_ = model.interaction_range
    reps = [int(np.ceil(rng_ / cell[k, k])) for k in range(3)]
    shifts = [(i, j, k) for i in range(-reps[0], reps[0] + 1) for j in range(-reps[1], reps[1] + 1)
              for k in range(-reps[2], reps[2] + 1) if (i, j, k) != (0, 0, 0)]
    lo, hi = pos.min(0) - rng_, pos.max(0) + rng_
    ghosts, g_orig = [], []
    for s in shifts:
        p = pos + np.array(s, float) @ cell
        keep = np.all((p > lo) & (p < hi), axis=1)  # a box-shaped ghost shell, like LAMMPS
        ghosts.append(p[keep])
        g_orig.append(np.nonzero(keep)[0])
    all_pos = np.concatenate([pos] + ghosts)
    all_sp = species[torch.from_numpy(np.concatenate([np.arange(n_atoms)] + g_orig))]
    big = np.diag(hi - lo + 10.0)
    g_ei, g_ev = neighbor_list(all_pos - lo + 5.0, big, [False] * 3, args.cutoff)

    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtypes.split(","):
            path = os.path.join(tmp, f"m_{dtype}.pt")
            export_model(model, path, dtype)
            m = torch.jit.load(path)
            t = getattr(torch, dtype)
            e_idx, vec = torch.tensor(ei), torch.tensor(ev, dtype=t)
            best, med, cpu = timed(lambda: m(species, e_idx, vec, n_atoms, False), args.reps)
            print(f"periodic {dtype}: {best * 1e3:8.1f} ms/step  {best / n_atoms * 1e6:7.1f} µs/atom wall "
                  f"(median {med / n_atoms * 1e6:.1f}), {cpu / n_atoms * 1e6:.1f} µs/atom CPU")
            if args.no_ghosts:
                continue
            ge, gv = torch.tensor(g_ei), torch.tensor(g_ev, dtype=t)
            best, med, cpu = timed(lambda: m(all_sp, ge, gv, n_atoms, False), max(1, args.reps - 1))
            print(f"ghosts   {dtype}: {len(all_pos)} nodes, {g_ei.shape[1]} edges, export (all nodes): "
                  f"{best / n_atoms * 1e6:7.1f} µs/local atom wall, {cpu / n_atoms * 1e6:.1f} CPU")

            def pruned():
                v = gv.detach().requires_grad_(True)
                e = m.model(all_sp, ge, v, n_atoms)[:n_atoms].sum()
                (g,) = torch.autograd.grad([e], [v])
                return g

            best, med, cpu = timed(pruned, args.reps)
            print(f"ghosts   {dtype}: pruned forward(..., n_local): {best / n_atoms * 1e6:7.1f} µs/local atom "
                  f"wall, {cpu / n_atoms * 1e6:.1f} CPU")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
