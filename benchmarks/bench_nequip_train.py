"""Training-step time of the NequIP-style model against a saved git revision of it, in one run.

A step is what `mlip train` does per batch: forward energies, forces by autograd with
create_graph, the recipe's loss (energy + forces, + virial for Mo), backward, fused Adam. The
architectures are those of training/nequip_water.yaml (one frame of ../shared/data/water per batch,
192 atoms) and training/nequip_mo.yaml (two frames of ../shared/data/mlearn/Mo per batch); without
the shared data, a generated 64-molecule water box / a rattled 2x54-atom bcc Mo pair.

The reference is the package's `mlip/models/nequip/` at `--ref` (default: the revision before the
training-step restructuring), copied from git into a temporary directory and imported as its own
package, so both run in this process on the same batch, with the same weights (the reference
loads the current model's state_dict: the parameter layout is unchanged). Rounds of the two
alternate so that load from other work on the machine hits both alike. Printed: median ms per step
over the rounds, CPU time of this process (time.process_time) and wall time, and the largest
difference of energies and forces between the two in float64 (and the relative one of the loss
gradients).

    python benchmarks/bench_nequip_train.py [--ref REV] [--rounds 3] [--steps 3] [--systems water,mo]
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MLIP_SHARED_DATA", REPO.parent / "shared" / "data"))
BASE_REV = "cb9c206"  # the revision before the NequIP training-step restructuring

from mlip.graph import Graph, collate, frame_edges, frame_to_graph  # noqa: E402
from mlip.models.base import predict  # noqa: E402
from mlip.models.nequip import NequIP  # noqa: E402
from mlip.train.loss import loss_terms, total_loss  # noqa: E402

# (recipe, batch size, start prefactors pe, pf, pv, virial_per_atom)
SYSTEMS = {"water": ("nequip_water.yaml", 1, 1.0, 100.0, 0.0, False),
           "mo": ("nequip_mo.yaml", 2, 1.0, 10.0, 0.1, True)}


def reference_package(rev: str, tmp: str) -> Any:
    """`mlip/models/nequip` at git revision `rev` as the importable package `nequip_ref`."""
    dest = Path(tmp) / "nequip_ref"
    dest.mkdir()
    files = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", rev, "mlip/models/nequip/"],
                           check=True, capture_output=True, text=True).stdout.split()
    for f in files:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{f}"], check=True,
                             capture_output=True, text=True).stdout
        (dest / Path(f).name).write_text(src.replace("mlip.models.nequip", "nequip_ref"))
    sys.path.insert(0, tmp)
    return importlib.import_module("nequip_ref")


def generated_mo(n: int) -> List[Any]:
    """Stand-in Mo data when ../shared/data is absent: rattled 54-atom bcc cells (random labels:
    only the time matters)."""
    from ase.build import bulk

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat(3)
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        out.append(atoms)
    return out


def system_batch(system: str, dtype: torch.dtype) -> Tuple[Dict[str, Any], Any, str]:
    """(model config, batch, where the data came from) for one recipe."""
    recipe, bs = SYSTEMS[system][:2]
    with open(REPO / "training" / recipe) as fh:
        arch = dict(yaml.safe_load(fh)["model"])
    arch.pop("family")
    if system == "water":  # one frame of the shared water data, else the DP benchmark's generated box
        from bench_dp_fused import water_graph

        graph, source = water_graph(arch["species"], arch["cutoff"], dtype)
        return arch, collate([graph]), source
    path = SHARED / "mlearn" / "Mo" / "training.json"
    if path.exists():
        from mlip.data import read_frames

        frames, source = read_frames(str(path))[:bs], str(path)
        graphs = [frame_to_graph(f, arch["species"], arch["cutoff"], dtype) for f in frames]
    else:
        source = "generated"
        graphs = []
        for atoms in generated_mo(bs):
            sp, ei, vec = frame_edges(atoms, arch["species"], arch["cutoff"], dtype)
            forces = torch.as_tensor(np.random.default_rng(1).normal(size=(len(atoms), 3)), dtype=dtype)
            graphs.append(Graph(sp, ei, vec, energy=-5.0 * len(atoms), forces=forces,
                                virial=torch.zeros(3, 3, dtype=dtype), weight=1.0, source="generated"))
    return arch, collate(graphs), source


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: Any, system: str) -> None:
    """One step as the trainer takes it, with the recipe's start prefactors."""
    pe, pf, pv, per_atom = SYSTEMS[system][2:]
    opt.zero_grad(set_to_none=True)
    pred = predict(model, batch, create_graph=True, need_virial=pv > 0)
    loss = total_loss(loss_terms(pred, batch, per_atom), batch, pe, pf, pv)
    loss.backward()
    opt.step()


def exactness(new: torch.nn.Module, ref: torch.nn.Module, batch: Any, system: str) -> Dict[str, float]:
    """float64: max |ΔE|, max |ΔF| and the max relative difference of the loss gradients."""
    pe, pf, pv, per_atom = SYSTEMS[system][2:]
    out = {}
    grads = []
    for m in (new, ref):
        m.zero_grad(set_to_none=True)
        pred = predict(m, batch, create_graph=True, need_virial=pv > 0)
        total_loss(loss_terms(pred, batch, per_atom), batch, pe, pf, pv).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
        out.setdefault("pred", []).append(pred)
    a, b = out.pop("pred")
    out["dE"] = float((a["energy"] - b["energy"]).detach().abs().max())
    out["dF"] = float((a["forces"] - b["forces"]).detach().abs().max())
    out["dgrad_rel"] = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max())
    return out


def run(system: str, dtype: torch.dtype, ref_pkg: Any, rounds: int, steps: int) -> Dict[str, Any]:
    arch, batch, source = system_batch(system, dtype)
    torch.manual_seed(0)
    new = NequIP(**arch).to(dtype)
    new.fit_statistics(batch.species, batch.edge_index, batch.edge_vec, batch.forces)
    new.set_energy_bias(torch.full((len(arch["species"]),), float(batch.energy.sum() / batch.species.shape[0]),
                                   dtype=dtype))
    ref = ref_pkg.NequIP(**new.config()).to(dtype)
    ref.load_state_dict(new.state_dict())
    row: Dict[str, Any] = {"system": system, "dtype": str(dtype).replace("torch.", ""), "source": source,
                           "atoms": int(batch.species.shape[0]), "edges": int(batch.edge_index.shape[1])}
    if dtype == torch.float64:
        row.update(exactness(new, ref, batch, system))
    models = {"new": new, "ref": ref}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4, fused=True) for k, m in models.items()}
    cpu: Dict[str, List[float]] = {k: [] for k in models}
    wall: Dict[str, List[float]] = {k: [] for k in models}
    for k in models:  # warm-up
        train_step(models[k], opts[k], batch, system)
    for _ in range(rounds):
        for k in models:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                train_step(models[k], opts[k], batch, system)
            wall[k].append((time.perf_counter() - t0) / steps * 1e3)
            cpu[k].append((time.process_time() - c0) / steps * 1e3)
    for k in models:
        row[f"{k}_cpu"], row[f"{k}_wall"] = statistics.median(cpu[k]), statistics.median(wall[k])
    return row


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=BASE_REV, help=f"git revision of the reference (default {BASE_REV})")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--steps", type=int, default=3, help="steps per model per round (default 3)")
    ap.add_argument("--systems", default="water,mo")
    ap.add_argument("--dtypes", default="float32,float64")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ref_pkg = reference_package(args.ref, tmp)
        print(f"NequIP training step, this tree vs {args.ref}, 1 thread, median of {args.rounds} rounds x "
              f"{args.steps} steps (ms/step; CPU = process time)")
        print(f"{'system':7} {'dtype':8} {'atoms':>5} {'edges':>6} {'ref CPU':>8} {'new CPU':>8} {'new/ref':>7} "
              f"{'ref wall':>9} {'new wall':>9}  exactness (float64)")
        for system in args.systems.split(","):
            for name in args.dtypes.split(","):
                r = run(system, getattr(torch, name), ref_pkg, args.rounds, args.steps)
                ex = (f"max|dE| {r['dE']:.1e} eV, max|dF| {r['dF']:.1e} eV/A, loss-gradient rel {r['dgrad_rel']:.1e}"
                      if "dE" in r else "")
                print(f"{r['system']:7} {r['dtype']:8} {r['atoms']:5d} {r['edges']:6d} {r['ref_cpu']:8.1f} "
                      f"{r['new_cpu']:8.1f} {r['new_cpu'] / r['ref_cpu']:7.3f} {r['ref_wall']:9.1f} "
                      f"{r['new_wall']:9.1f}  {ex}", flush=True)
        print(f"data: {r['source']}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
