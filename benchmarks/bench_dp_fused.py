"""Training-step time of the Deep Potential with the fused embedding-net op against the reference
autograd path (`model.fused: true | false`), and of the tabulated path on top of it (`model.fused_step:
0.02`: the nets on a node grid, cubic Hermite to the edges), float32 and float64, one thread, in one run.

The model is the water recipe's architecture (training/water_dp.yaml: se_e2_a, rcut 6, embedding
[25, 50, 100], fitting [240, 240, 240], type_one_side) on one frame of ../shared/data/water (192 atoms),
or on a generated 64-molecule water box when the data is not there. A step is what `mlip train` does
per batch of one frame: forward, forces with create_graph, the energy + force loss, backward, Adam.
All models start from the same weights; steps of the paths alternate in rounds so that load
from other work on the machine hits them alike; times are CPU time of this process (one thread: the
compute itself, not the waits for a shared core), the figure is the median over rounds.

    python benchmarks/bench_dp_fused.py [--rounds 5] [--steps 4] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
WATER = Path(os.environ.get("MLIP_SHARED_DATA", REPO.parent / "shared" / "data")) / "water" / "data_0"

from mlip.checks import POSITIVE_INT, arg_type  # noqa: E402
from mlip.graph import Graph, collate, frame_edges, frame_to_graph  # noqa: E402
from mlip.models.base import predict  # noqa: E402
from mlip.models.deepmd import DeepPotSeA  # noqa: E402
from mlip.models.dp_fused import available  # noqa: E402
from mlip.train.loss import loss_terms, total_loss  # noqa: E402


def water_architecture() -> Dict[str, Any]:
    """The `model` section of training/water_dp.yaml without `family`."""
    with open(REPO / "training" / "water_dp.yaml") as fh:
        model = dict(yaml.safe_load(fh)["model"])
    model.pop("family")
    return model


def water_graph(species: List[str], rcut: float, dtype: torch.dtype) -> tuple:
    """(graph, where it came from): the first frame of the shared water data, else a generated box
    (64 molecules at 1 g/cm³, random orientations, labels from a fixed random draw)."""
    if WATER.exists():
        from mlip.data.dataset import read_frames

        frame = read_frames(str(WATER))[0]
        return frame_to_graph(frame, species, rcut, dtype), f"{WATER} frame 0"
    from ase import Atoms

    rng = np.random.default_rng(0)
    side = (64 * 18.015 / 0.6022) ** (1 / 3)  # Å, 1 g/cm³
    grid = (np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * side / 4
    pos, sym = [], []
    for c in grid:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        pos += [c, c + q @ [0.9572, 0, 0], c + q @ [0.9572 * np.cos(1.824), 0.9572 * np.sin(1.824), 0]]
        sym += ["O", "H", "H"]
    atoms = Atoms(sym, positions=pos, cell=[side] * 3, pbc=True)
    sp, ei, vec = frame_edges(atoms, species, rcut, dtype)
    forces = torch.as_tensor(rng.normal(size=(len(atoms), 3)), dtype=dtype)
    graph = Graph(sp, ei, vec, energy=-10.0 * len(atoms), forces=forces, virial=None, weight=1.0, source="generated")
    return graph, "generated 64-molecule water box"


def make_models(arch: Dict[str, Any], dtype: torch.dtype, step: float = 0.02) -> tuple:
    """(fused, reference, tabulated) models with identical weights and statistics."""
    arch = {k: v for k, v in arch.items() if k != "fused_step"}
    ref = DeepPotSeA(**{**arch, "fused": False}, seed=1).to(dtype)
    with torch.no_grad():
        ref.s_avg.fill_(0.2)
        ref.s_std.fill_(0.3)
        ref.r_std.fill_(0.5)
    fused = DeepPotSeA(**{**arch, "fused": True}, seed=1).to(dtype)
    fused.load_state_dict(ref.state_dict())
    tab = DeepPotSeA(**{**arch, "fused": True, "fused_step": step}, seed=1).to(dtype)
    tab.load_state_dict(ref.state_dict())
    return fused, ref, tab


def step(model: DeepPotSeA, opt: torch.optim.Optimizer, batch: Any) -> float:
    """One training step as the trainer takes it (loss prefactors of the recipe's start)."""
    opt.zero_grad(set_to_none=True)
    pred = predict(model, batch, create_graph=True, need_virial=False)
    loss = total_loss(loss_terms(pred, batch), batch, 0.02, 1000.0, 0.0)
    loss.backward()
    opt.step()
    return float(loss.detach())


def time_dtype(arch: Dict[str, Any], dtype: torch.dtype, rounds: int, steps: int) -> Dict[str, Any]:
    graph, source = water_graph(arch["species"], arch["rcut"], dtype)
    batch = collate([graph])
    fused, ref, tab = make_models(arch, dtype)
    models = {"fused": fused, "reference": ref, "tabulated": tab}
    opts = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    per: Dict[str, List[float]] = {name: [] for name in models}
    for name in per:  # warm-up (allocator, first-call set-up)
        step(models[name], opts[name], batch)
    for _ in range(rounds):
        for name in per:
            t0 = time.process_time()
            for _ in range(steps):
                step(models[name], opts[name], batch)
            per[name].append((time.process_time() - t0) / steps * 1e3)
    med = {k: statistics.median(v) for k, v in per.items()}
    return {"dtype": str(dtype).replace("torch.", ""), "source": source, "atoms": graph.n_atoms,
            "edges": int(graph.edge_index.shape[1]), "fused_ms": med["fused"], "reference_ms": med["reference"],
            "tabulated_ms": med["tabulated"], "ratio": med["fused"] / med["reference"],
            "tabulated_ratio": med["tabulated"] / med["fused"], "rounds_ms": per}


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=arg_type(POSITIVE_INT), default=5, help="alternating rounds (default 5)")
    ap.add_argument("--steps", type=arg_type(POSITIVE_INT), default=4, help="steps per path per round (default 4)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if not available():
        print("error: the fused op (libmlip_ops.so) is not built: run scripts/install.sh", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    arch = water_architecture()
    out = [time_dtype(arch, dt, args.rounds, args.steps) for dt in (torch.float32, torch.float64)]
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"DP water architecture, {out[0]['source']} ({out[0]['atoms']} atoms, {out[0]['edges']} edges), 1 thread")
    print(f"{'dtype':8} {'fused ms/step':>14} {'reference ms/step':>18} {'fused/reference':>16} "
          f"{'tabulated ms/step':>18} {'tabulated/fused':>16}")
    for r in out:
        print(f"{r['dtype']:8} {r['fused_ms']:14.1f} {r['reference_ms']:18.1f} {r['ratio']:16.3f} "
              f"{r['tabulated_ms']:18.1f} {r['tabulated_ratio']:16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
