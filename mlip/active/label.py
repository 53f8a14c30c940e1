"""Labelling stage: the oracle (any ASE calculator) on each selected configuration.

The oracle is `{"class": "module:Name", "kwargs": {...}}` (default EMT; GFN1/GFN2-xTB through tblite,
VASP, Quantum ESPRESSO, GPAW … by import path), run by the executor of `label.executor` (local |
process | dask, `mlip.active.executors`). Each result is its own file `label/{j}.xyz`, renamed into
place when complete by the worker that computed it, so a kill loses at most the calculations in
progress and never computes one twice. A calculation that raises
or returns non-finite energy/forces/stress is recorded in `label/{j}.failed.json` with the error and
the loop goes on (one bad SCF must not stop a week-long campaign). At the end `label/labels.xyz`
(every good label, in selection order) and `label/done.json`.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from mlip.active.store import KillSwitch, RunStore, atomic_atoms, atomic_json, read_atoms, read_json


def label_stage(cfg: Dict[str, Any], store: RunStore, kill: KillSwitch, k: int) -> Dict[str, Any]:
    from mlip.active.executors import run_labels

    d = store.it_dir(k, "label")
    os.makedirs(d, exist_ok=True)
    done = os.path.join(d, "done.json")
    if os.path.isfile(done):
        return read_json(done)
    sel = read_atoms(store.it_dir(k, "select", "selected.xyz"))
    paths = [(os.path.join(d, f"{j:04d}.xyz"), os.path.join(d, f"{j:04d}.failed.json")) for j in range(len(sel))]
    todo = [j for j in range(len(sel)) if not any(os.path.isfile(p) for p in paths[j])]
    lab = cfg["label"]
    store.log(f"iteration {k}: label {len(todo)} of {len(sel)} selected configurations with "
              f"{cfg['oracle'].get('class', 'ase.calculators.emt:EMT')} ({lab['executor']}"
              f"{'' if lab['executor'] == 'local' else ', ' + str(lab.get('address') or lab['workers']) + ' workers'})")
    tasks = [(sel[j], *paths[j], {"al_id": sel[j].info.get("al_id"), "al_index": j, "al_iteration": k})
             for j in todo]

    def finished(i: int, status: str) -> None:
        j = todo[i]
        if status == "failed":
            store.log(f"  label {j} ({tasks[i][3]['al_id']}) FAILED: {read_json(paths[j][1])['error']}")
        if lab["executor"] != "local":
            kill.tick("label", k)  # pools: the event is a label coming back, others still in flight

    run_labels(cfg, tasks, finished, before=lambda: kill.tick("label", k))
    labelled, failed = [], []
    for j in range(len(sel)):
        p = os.path.join(d, f"{j:04d}.xyz")
        if os.path.isfile(p):
            labelled.extend(read_atoms(p))
        else:
            failed.append(read_json(os.path.join(d, f"{j:04d}.failed.json")))
    atomic_atoms(os.path.join(d, "labels.xyz"), labelled)
    cost = [read_json(os.path.join(d, f"{j:04d}.time.json")) or {} for j in range(len(sel))
            if os.path.isfile(os.path.join(d, f"{j:04d}.xyz"))]
    info = {"selected": len(sel), "labelled": len(labelled), "failed": len(failed), "failures": failed,
            "oracle_cpu_s": sum(c.get("oracle_cpu_s", 0.0) for c in cost),
            "oracle_wall_s": sum(c.get("oracle_wall_s", 0.0) for c in cost)}
    atomic_json(done, info)
    store.log(f"iteration {k}: {len(labelled)} labelled, {len(failed)} failed")
    return info
