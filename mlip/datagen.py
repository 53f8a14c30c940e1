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
                    calculator: Optional[Dict[str, Any]] = None, water: Optional[Dict[str, Any]] = None) -> List:
    """Frames from EMT-labelled fcc supercells: a mix of strained+rattled cells and MD snapshots, each
    tagged with its data group (`config_type`: "strained+rattled", "md 900 K", … + " vacancy").
    kind "water": periodic liquid-water boxes instead (`water_frames`, options in `water`), labelled by
    `calculator` (e.g. GFN1-xTB: {class: "tblite.ase:TBLite", kwargs: {method: GFN1-xTB}})."""
    from ase import units
    from ase.build import bulk
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from mlip.data import Frame

    if kind == "water":
        return water_frames(n_frames=n_frames, seed=seed, strain=strain, calculator=calculator, **(water or {}))
    if kind != "emt":
        raise ValueError(f"data.generate.kind '{kind}' is not supported (emt, water)")
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
            atoms.set_constraint(FixCom())  # ASE's recommended way to keep the centre of mass (not fixcm)
            dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=temp, friction=0.05, rng=rng, fixcm=False)
            dyn.run(md_steps)
            atoms.set_constraint()
            group = f"md {temp:g} K"
        atoms.calc = make_calculator(calculator)
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()  # label this geometry
        frame = Frame.from_atoms(atoms)
        frame.source = f"generated:{kind}:{k}"
        frame.info["config_type"] = group + (" vacancy" if len(atoms) < len(base) else "")  # data group
        frames.append(frame)
    return frames


def water_box(n_molecules: int = 16, density: float = 1.0, seed: int = 0, rattle: float = 0.0,
              min_distance: float = 1.5, tries: int = 200):
    """A cubic periodic box of `n_molecules` randomly oriented water molecules on a simple-cubic grid at
    `density` (g/cm³), positions rattled by `rattle` Å (Gaussian): a start for liquid-water MD.

    Grid sites are ~2.5 Å apart, so two molecules turned towards each other would put hydrogens of
    different molecules ~0.7 Å apart: a configuration that liquid water never visits, and whose
    relaxation would dominate the first picoseconds of any MD started from it (and of any data set or
    active-learning pool drawn from that MD). Each molecule's orientation is therefore drawn until every
    distance to the atoms of molecules already placed (minimum image) is at least `min_distance` Å (a
    hydrogen bond's H···O is ~1.8 Å), keeping the best of `tries` draws if none reaches it."""
    from ase import Atoms
    from ase.build import molecule
    from scipy.spatial.transform import Rotation

    if n_molecules < 1 or not density > 0:
        raise ValueError(f"water box: n_molecules must be >= 1 and density > 0, got {n_molecules}, {density}")
    rng = np.random.default_rng(seed)
    side = (n_molecules * 18.015 / 6.02214076e23 / density * 1e24) ** (1 / 3)  # Å
    k = int(np.ceil(n_molecules ** (1 / 3) - 1e-9))
    h2o = molecule("H2O")
    h2o.positions -= h2o.get_center_of_mass()
    sites = [(i, j, m) for i in range(k) for j in range(k) for m in range(k)]
    placed = np.zeros((0, 3))
    for n in rng.permutation(len(sites))[:n_molecules]:
        centre = (np.asarray(sites[n]) + 0.5) * side / k
        best, best_d = None, -1.0
        for _ in range(max(1, int(tries))):
            pos = Rotation.random(random_state=int(rng.integers(1 << 31))).apply(h2o.positions) + centre
            if not len(placed):
                best = pos
                break
            diff = pos[:, None, :] - placed[None, :, :]
            diff -= side * np.round(diff / side)  # minimum image in the cubic box
            d = float(np.sqrt((diff ** 2).sum(-1)).min())
            if d > best_d:
                best, best_d = pos, d
            if d >= min_distance:
                break
        placed = np.vstack([placed, best])
    box = Atoms("OH2" * n_molecules, positions=placed, cell=[side] * 3, pbc=True)
    if rattle:
        box.positions += rng.normal(0.0, rattle, box.positions.shape)
    box.wrap()
    return box


def water_frames(n_frames: int = 10, n_molecules: int = 16, seed: int = 1, strain: float = 0.03,
                 rattle: float = 0.08, calculator: Optional[Dict[str, Any]] = None) -> List:
    """Labelled water boxes: random orientations, densities within ±`strain` (linear) of 1 g/cm³ and
    rattled positions, each labelled by `calculator` (energy, forces, virial)."""
    from mlip.data import Frame

    if calculator is None:
        raise ValueError("data.generate.kind 'water' needs a calculator (e.g. {class: 'tblite.ase:TBLite', "
                         "kwargs: {method: GFN1-xTB}})")
    rng = np.random.default_rng(seed)
    calc = make_calculator(calculator)
    frames = []
    for k in range(int(n_frames)):
        density = 1.0 / (1.0 + rng.uniform(-strain, strain)) ** 3
        atoms = water_box(n_molecules, density, seed=int(rng.integers(1 << 31)), rattle=rattle)
        atoms.calc = calc
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        frame = Frame.from_atoms(atoms)
        frame.source = f"generated:water:{k}"
        frame.info["config_type"] = "water box"
        frames.append(frame)
    return frames
