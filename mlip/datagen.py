"""Labelled data made with an ASE calculator (default EMT), so that the quick-start, the tests and the
examples run on a machine without any DFT data: rattled and strained fcc supercells plus short
Langevin MD snapshots at several temperatures, each labelled with energy, forces and virial."""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


def make_calculator(spec: Optional[Dict[str, Any]] = None):
    """An ASE calculator from {"class": "module:Name" or "module.Name", "kwargs": {...}}; default EMT."""
    spec = spec or {}
    target = spec.get("class", "ase.calculators.emt:EMT")
    mod, _, name = target.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import calculator '{target}': {exc}") from None
    return cls(**spec.get("kwargs", {}))


def generate_frames(kind: str = "emt", element: str = "Cu", n_frames: int = 40, size: int = 2,
                    temperatures: Sequence[float] = (300.0, 900.0, 1500.0), strain: float = 0.04,
                    md_steps: int = 20, seed: int = 1, vacancies: bool = True,
                    calculator: Optional[Dict[str, Any]] = None) -> List:
    """Frames from EMT-labelled fcc supercells: a mix of strained+rattled cells and MD snapshots, each
    tagged with its data group (`config_type`: "strained+rattled", "md 900 K", … + " vacancy")."""
    from ase import units
    from ase.build import bulk
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from mlip.data import Frame

    if kind != "emt":
        raise ValueError(f"data.generate.kind '{kind}' is not supported (emt)")
    rng = np.random.default_rng(seed)
    frames = []
    base = bulk(element, "fcc", cubic=True).repeat((size, size, size))
    for k in range(int(n_frames)):
        atoms = base.copy()
        if vacancies and k % 5 == 4:
            del atoms[int(rng.integers(len(atoms)))]
        eps = rng.uniform(-strain, strain, (3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
        atoms.calc = make_calculator()
        if k % 2 == 0:
            atoms.rattle(0.05 + 0.1 * rng.random(), seed=int(rng.integers(1 << 30)))
            group = "strained+rattled"
        else:
            temp = float(temperatures[k // 2 % len(temperatures)])
            MaxwellBoltzmannDistribution(atoms, temperature_K=temp, rng=rng)
            dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=temp, friction=0.05, rng=rng)
            dyn.run(md_steps)
            group = f"md {temp:g} K"
        atoms.calc = make_calculator(calculator)
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()  # label this geometry
        frame = Frame.from_atoms(atoms)
        frame.source = f"generated:{kind}:{k}"
        frame.info["config_type"] = group + (" vacancy" if len(atoms) < len(base) else "")  # data group
        frames.append(frame)
    return frames
