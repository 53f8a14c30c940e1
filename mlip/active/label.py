"""Labelling stage: the oracle (any ASE calculator) on each selected configuration.

The oracle is `{"class": "module:Name", "kwargs": {...}}` (default EMT; VASP, Quantum ESPRESSO, GPAW …
by import path). Each result is its own file `label/{j}.xyz`, renamed into place when complete, so a
kill loses at most the calculation in progress and never computes one twice. A calculation that raises
or returns non-finite energy/forces/stress is recorded in `label/{j}.failed.json` with the error and
the loop goes on (one bad SCF must not stop a week-long campaign). At the end `label/labels.xyz`
(every good label, in selection order) and `label/done.json`.
"""
from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np

from mlip.active.store import KillSwitch, RunStore, atomic_atoms, atomic_json, bare, read_atoms, read_json


def label_stage(cfg: Dict[str, Any], store: RunStore, kill: KillSwitch, k: int) -> Dict[str, Any]:
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlip.datagen import make_calculator

    d = store.it_dir(k, "label")
    os.makedirs(d, exist_ok=True)
    done = os.path.join(d, "done.json")
    if os.path.isfile(done):
        return read_json(done)
    sel = read_atoms(store.it_dir(k, "select", "selected.xyz"))
    todo = [j for j in range(len(sel)) if not os.path.isfile(os.path.join(d, f"{j:04d}.xyz"))
            and not os.path.isfile(os.path.join(d, f"{j:04d}.failed.json"))]
    store.log(f"iteration {k}: label {len(todo)} of {len(sel)} selected configurations with "
              f"{cfg['oracle'].get('class', 'ase.calculators.emt:EMT')}")
    oracle = None
    for j in todo:
        kill.tick("label", k)
        atoms = bare(sel[j], {"al_id": sel[j].info.get("al_id"), "al_index": j, "al_iteration": k})
        try:
            if oracle is None:
                oracle = make_calculator(cfg["oracle"])
            atoms.calc = oracle
            e = atoms.get_potential_energy()
            f = atoms.get_forces()
            stress = atoms.get_stress() if atoms.pbc.all() else None
            bad = [name for name, v in (("energy", e), ("forces", f), ("stress", stress))
                   if v is not None and not np.all(np.isfinite(v))]
            if bad:
                raise FloatingPointError(f"the oracle returned non-finite {', '.join(bad)}")
        except Exception as exc:
            oracle = None  # a calculator that failed may be in a bad state: make a new one
            msg = f"{type(exc).__name__}: {exc}"
            atomic_json(os.path.join(d, f"{j:04d}.failed.json"),
                        {"index": j, "al_id": atoms.info["al_id"], "error": msg})
            store.log(f"  label {j} ({atoms.info['al_id']}) FAILED: {msg}")
            continue
        out = bare(atoms, dict(atoms.info))
        res = {"energy": float(e), "forces": np.array(f)}
        if stress is not None:
            res["stress"] = np.array(stress)
        out.calc = SinglePointCalculator(out, **res)
        atomic_atoms(os.path.join(d, f"{j:04d}.xyz"), [out])
    labelled, failed = [], []
    for j in range(len(sel)):
        p = os.path.join(d, f"{j:04d}.xyz")
        if os.path.isfile(p):
            labelled.extend(read_atoms(p))
        else:
            failed.append(read_json(os.path.join(d, f"{j:04d}.failed.json")))
    atomic_atoms(os.path.join(d, "labels.xyz"), labelled)
    info = {"selected": len(sel), "labelled": len(labelled), "failed": len(failed), "failures": failed}
    atomic_json(done, info)
    store.log(f"iteration {k}: {len(labelled)} labelled, {len(failed)} failed")
    return info
