"""Our Deep Potential against DeePMD-kit itself, weight for weight: the same function, and the same training
trajectory from the same start. This separates "the model or the optimiser differ" from "the runs differ by
chance" when the two codes are compared at equal steps (benchmarks/bench_ab.py --peer-deepmd).

1. DeePMD-kit (peers venv, TF backend, float64) builds the water recipe's model (training/water_dp.yaml:
   se_e2_a, rcut 6, sel [46, 92], embedding [25, 50, 100] type_one_side, fitting [240, 240, 240] with
   resnet_dt) on a one-frame system (frame 0 of water data_0) and saves it untrained (`numb_steps: 0`).
2. Its checkpoint's weights and environment statistics go into our `DeepPotSeA` with `env_shift: true`
   and `env_stats: slots` (DeePMD-kit's centred s-row and slot statistics, see docs/CONTRACT.md), and
   the energy reference is set to DeePMD-kit's `bias_atom_e` + fit(0). Forces and energy are compared
   with `dp test` of the frozen untrained model.
3. Both codes then train on that frame for `--steps` steps, force loss only (pref_e 0: our energy
   reference fit(D) − fit(0) and DeePMD-kit's fit(D) differ by a per-species constant, which forces do
   not see), the recipe's schedule compressed onto the steps, Adam, batch 1; DeePMD-kit reports the force
   RMSE on the frame after every step (`disp_freq: 1`), ours does the same. The curves are compared step
   by step.

Measured (2026-12-07): forces at the start agree to 9e-16 eV/Å; over 300 steps the curves agree to the
3 digits that lcurve.out prints (0.860 → 0.710 eV/Å in both). With the same start, the optimiser and the
loss are DeePMD-kit's. At 2000 steps on the full water split the spread between seeds (0.233 to 0.285
eV/Å for the same code) is larger than the difference between the codes.

    python benchmarks/dp_equivalence.py [--steps 300] [--workdir DIR] [--save-name NAME]

Needs the peers venv (`python benchmarks/peers.py install --only deepmd`) and the shared water data;
prints a SKIP line and exits 0 without them. Writes benchmarks/results/dp_equivalence.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_deepmd  # noqa: E402
import peers  # noqa: E402

REPO = peers.REPO
sys.path.insert(0, str(REPO))

SEL, NEURON, AXIS, FITTING = [46, 92], [25, 50, 100], 16, [240, 240, 240]
READ_CHECKPOINT = """
import sys, numpy as np, tensorflow as tf
r = tf.train.load_checkpoint(sys.argv[1])
np.savez(sys.argv[2], **{k.replace('/', '__'): r.get_tensor(k) for k in r.get_variable_to_shape_map() if 'Adam' not in k})
"""


def one_frame_system(src: Path, dst: Path) -> None:
    """A DeePMD-kit system holding frame 0 of `src` (set.000)."""
    (dst / "set.000").mkdir(parents=True, exist_ok=True)
    for name in ("type.raw", "type_map.raw"):
        shutil.copy(src / name, dst / name)
    for name in ("box", "coord", "energy", "force"):
        np.save(dst / "set.000" / f"{name}.npy", np.load(src / "set.000" / f"{name}.npy")[:1])


def deepmd_run(workdir: Path, system: Path, steps: int, seed: int) -> None:
    """`dp train` on the one-frame system, float64, force loss only, force RMSE after every step."""
    cfg = peer_deepmd.dp_input([str(system)], [str(system)], steps, max(1, steps // 200), seed=seed,
                               precision="float64", disp_freq=1, save_freq=max(1, steps))
    cfg["loss"].update(start_pref_e=0.0, limit_pref_e=0.0)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.json").write_text(json.dumps(cfg, indent=1))
    paths = peers.require("deepmd")
    res = peer_deepmd._dp(paths, ["train", "input.json"], workdir, peers.lammps_env(threads=1), "train.log", timeout=3600)
    peer_deepmd._check(res, "dp train")


def read_weights(workdir: Path, out: Path) -> Dict[str, np.ndarray]:
    """The variables of DeePMD-kit's checkpoint in `workdir` (no optimiser slots), read with the peers
    venv's TensorFlow."""
    py = peers.venv_python(peers.venv_dir("deepmd"))
    subprocess.run([str(py), "-c", READ_CHECKPOINT, str(workdir / "model.ckpt"), str(out)], check=True,
                   env=peers.lammps_env(threads=1), capture_output=True, timeout=600)
    with np.load(out) as z:
        return {k.replace("__", "/"): z[k] for k in z.files}


def lcurve_forces(workdir: Path) -> Dict[int, float]:
    """{step: rmse_f_trn} from lcurve.out (columns: step, rmse_val, rmse_trn, rmse_f_val, rmse_f_trn, lr)."""
    out = {}
    for line in (workdir / "lcurve.out").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        cols = line.split()
        out[int(cols[0])] = float(cols[4])
    return out


def load_into_ours(weights: Dict[str, np.ndarray]):
    """DeePMD-kit's se_e2_a (type_one_side, two species) as our `DeepPotSeA`, float64."""
    import torch

    from mlip.models.deepmd import DeepPotSeA

    dt = torch.float64
    m = DeepPotSeA(["O", "H"], rcut=6.0, rcut_smth=0.5, sel=SEL, neuron=NEURON, axis_neuron=AXIS,
                   fitting_neuron=FITTING, type_one_side=True, resnet_dt=True, env_shift=True, env_stats="slots").to(dt)

    def t(key: str):
        return torch.tensor(weights[key], dtype=dt)

    nsel = sum(SEL)
    with torch.no_grad():
        avg, std = t("descrpt_attr/t_avg").reshape(2, nsel, 4), t("descrpt_attr/t_std").reshape(2, nsel, 4)
        m.s_avg.copy_(avg[:, 0, 0])
        m.s_std.copy_(std[:, 0, 0])
        m.r_std.copy_(std[:, 0, :])
        for j, net in enumerate(m.embedding):  # filter_type_all/{matrix,bias}_<layer>_<neighbour type>
            for layer_no, layer in enumerate(net.layers, start=1):
                layer.linear.weight.copy_(t(f"filter_type_all/matrix_{layer_no}_{j}").T)
                layer.linear.bias.copy_(t(f"filter_type_all/bias_{layer_no}_{j}"))
        zero = torch.zeros(1, m.m1 * m.m2, dtype=dt)
        for k, net in enumerate(m.fitting):
            for layer_no, layer in enumerate(net.layers):
                layer.linear.weight.copy_(t(f"layer_{layer_no}_type_{k}/matrix").T)
                layer.linear.bias.copy_(t(f"layer_{layer_no}_type_{k}/bias"))
                if layer.use_dt:
                    layer.dt.copy_(t(f"layer_{layer_no}_type_{k}/idt"))
            net.out.weight.copy_(t(f"final_layer_type_{k}/matrix").T)
            net.out.bias.copy_(t(f"final_layer_type_{k}/bias"))
            # ours: E_i = bias + fit(D_i) − fit(D_isolated); DeePMD-kit: bias_atom_e + fit(D_i)
            m.energy_bias[k] = t("fitting_attr/t_bias_atom_e")[k] + net(m._isolated_descriptor(k, zero)).squeeze()
    return m


def train_ours(model, graph, steps: int) -> List[float]:
    """Force RMSE on the frame after each of `steps` Adam steps (force loss only, the schedule of
    `deepmd_run`)."""
    import torch

    from mlip.graph import collate
    from mlip.models.base import predict
    from mlip.train.loss import loss_terms, total_loss

    batch = collate([graph])
    lr0, lr1, decay = 1e-3, 3.51e-8, max(1, steps // 200)
    rate = math.exp(math.log(lr1 / lr0) / (steps / decay))
    opt = torch.optim.Adam(model.parameters(), lr=lr0)
    out = []
    for step in range(steps):
        lr = lr0 * rate ** (step // decay)
        for group in opt.param_groups:
            group["lr"] = lr
        pred = predict(model, batch, create_graph=True, need_virial=False)
        loss = total_loss(loss_terms(pred, batch), batch, 0.0, 1.0 + 999.0 * lr / lr0, 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        after = predict(model, batch, need_virial=False)
        out.append(float((after["forces"] - batch.forces).pow(2).mean().sqrt()))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps of both codes (default 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", help="default: a temporary directory")
    ap.add_argument("--save-name", default="dp_equivalence", help="results JSON name (default dp_equivalence)")
    a = ap.parse_args(argv)
    try:
        peers.require("deepmd")
        water = peer_deepmd._water_systems()["train"][0]
    except (peer_deepmd.Skip, RuntimeError) as exc:
        print(f"SKIP: {str(exc).splitlines()[0]}")
        return 0
    import torch

    from mlip.data.dataset import read_frames
    from mlip.graph import collate, frame_to_graph
    from mlip.models.base import predict

    torch.set_num_threads(1)
    wd = Path(a.workdir or tempfile.mkdtemp(prefix="dp_equivalence_"))
    system = wd / "system"
    one_frame_system(water, system)
    deepmd_run(wd / "untrained", system, 0, a.seed)
    weights = read_weights(wd / "untrained", wd / "untrained.npz")
    model = load_into_ours(weights)
    graph = frame_to_graph(read_frames(str(system))[0], ["O", "H"], 6.0, torch.float64)

    paths = peers.require("deepmd")
    frozen = peer_deepmd.freeze(wd / "untrained")
    res = peer_deepmd._dp(paths, ["test", "-m", str(frozen), "-s", str(system), "-d", "detail"], wd / "untrained",
                          peers.lammps_env(threads=1), "test.log", timeout=600)
    peer_deepmd._check(res, "dp test")
    f_dp = np.loadtxt(wd / "untrained" / "detail.f.out")[:, 3:]
    e_dp = float(np.loadtxt(wd / "untrained" / "detail.e.out", ndmin=2)[0, 1])
    pred = predict(model, collate([graph]), need_virial=False)
    f_diff = float(np.abs(pred["forces"].detach().numpy() - f_dp).max())
    e_diff = abs(float(pred["energy"].detach()[0]) - e_dp)
    print(f"untrained model, {graph.n_atoms} atoms: max |F_ours − F_deepmd| = {f_diff:.2e} eV/Å "
          f"(largest |F| {np.abs(f_dp).max():.3f}), |E_ours − E_deepmd| = {e_diff:.2e} eV")

    deepmd_run(wd / "trained", system, a.steps, a.seed)
    theirs = lcurve_forces(wd / "trained")
    ours = train_ours(model, graph, a.steps)
    rel = [abs(ours[s - 1] - theirs[s]) / theirs[s] for s in range(1, a.steps + 1) if s in theirs]
    print(f"{a.steps} steps, force loss only: force RMSE {ours[0]:.4f} → {ours[-1]:.4f} (ours), "
          f"{theirs.get(1, float('nan')):.4f} → {theirs.get(a.steps, float('nan')):.4f} (DeePMD-kit, printed to "
          f"3 digits); largest relative difference over the steps {max(rel):.1e}")
    payload = {"steps": a.steps, "seed": a.seed, "atoms": graph.n_atoms, "untrained_force_max_abs_diff": f_diff,
               "untrained_energy_abs_diff": e_diff, "force_rmse_ours": ours,
               "force_rmse_deepmd": [theirs.get(s) for s in range(1, a.steps + 1)], "max_relative_difference": max(rel)}
    from common import save

    print("written", save(a.save_name, payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
