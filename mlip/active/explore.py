"""Exploration stage: MD with the current committee, recording graded candidate snapshots.

From the seed structures over the grid temperatures × strains|pressures (a seeded random subset of
`runs` of them per iteration), ASE Langevin NVT at strained cells (or NPTBerendsen with `pressures`),
or LAMMPS (`pair_style mlip`). A snapshot every `every` steps carries its grade: γ (max per-atom
extrapolation grade of model 0) or the committee's max per-atom force deviation. A run halts when the
grade reaches the break threshold; the last in-window configuration before the break is kept too (the
most informative one). Every run has its own random stream (seed, iteration, run), so a run redone
after a kill is the run that would have happened. Per run: `explore/run_{r}.xyz` + `run_{r}.json`.

With `explore.continue`, a run starts from its seed's latest explored state instead of the seed itself:
the final snapshot of the last earlier run from the same seed that was not halted (its strain undone);
with `explore.continue_halted` a halted run counts too, from its last snapshot below lo (on-the-fly
learning's way: after the labels the same trajectory goes on). Every snapshot carries its trajectory's
`age` (steps since the seed structure), which `explore.burn_in` compares against (mlip.active.select).
Successive iterations then extend one trajectory per seed, as on-the-fly learning does, so that
exploration leaves the far-from-equilibrium starting structures (e.g. rattled boxes) behind and the
candidates come from the equilibrated ensemble the model will be used in. A function of the files of
finished iterations only, so resume is unchanged.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mlip.active.config import window
from mlip.active.store import KillSwitch, RunStore, atomic_atoms, atomic_json, bare, read_json

GridPoint = Tuple[int, float, float, Optional[float]]  # (seed index, T [K], strain, pressure [bar] | None)


def grade_of(results: Dict[str, Any], grade: str) -> float:
    """The grade of one calculation (ASE calculator results); inf when the model did not give it."""
    if grade == "gamma":
        return float(results.get("gamma", math.inf))
    return float(results.get("max_force_deviation", math.inf))


def seed_structures(cfg: Dict[str, Any], init_path: str) -> List[Any]:
    """The MD starting structures: `explore.seeds` files (default: the initial data), repeated by
    `explore.supercell`."""
    from mlip.active.store import read_atoms

    e = cfg["explore"]
    if e["seeds"]:
        from mlip.data import read_frames

        frames = []
        for p in e["seeds"]:
            frames.extend(read_frames(p))
        atoms = [fr.to_atoms() for fr in frames]
    else:
        atoms = read_atoms(init_path)
    atoms = [bare(a) for a in atoms]
    if e["supercell"]:
        atoms = [a.repeat(tuple(int(x) for x in e["supercell"])) for a in atoms]
    return atoms


class Explorer:
    """The exploration stage of one run directory."""

    def __init__(self, cfg: Dict[str, Any], store: RunStore, kill: KillSwitch,
                 seeds: Callable[[], List[Any]], species: Callable[[], List[str]]) -> None:
        self.cfg = cfg
        self.store = store
        self.kill = kill
        self._seeds_fn = seeds
        self._seeds: Optional[List[Any]] = None
        self.species = species
        self.lo, self.hi, self.brk = window(cfg)

    def seeds(self) -> List[Any]:
        if self._seeds is None:
            self._seeds = self._seeds_fn()
        return self._seeds

    def grid(self, k: int) -> List[GridPoint]:
        """The MD runs of iteration k (the whole grid, or `runs` of it drawn with the loop's seed)."""
        e = self.cfg["explore"]
        strains = list(e["strains"] or [0.0])
        pressures = list(e["pressures"]) if e["pressures"] else [None]
        full = [(s, float(T), float(eps), p) for s in range(len(self.seeds())) for T in e["temperatures"]
                for eps in strains for p in pressures]
        if e["runs"] is None or int(e["runs"]) >= len(full):
            return full
        rng = np.random.default_rng([int(self.cfg["seed"]), 7, k])
        pick = rng.choice(len(full), int(e["runs"]), replace=False)
        return [full[i] for i in sorted(pick)]

    def grade(self, results: Dict[str, Any]) -> float:
        return grade_of(results, self.cfg["grade"])

    def _calculator(self, models: Sequence[str]):
        from mlip.calculator import MLIPCalculator

        return MLIPCalculator(list(models) if self.cfg["committee"] > 1 else list(models[:1]))

    def run_stage(self, k: int, models: List[str]) -> Dict[str, Any]:
        d = self.store.it_dir(k, "explore")
        os.makedirs(d, exist_ok=True)
        done = os.path.join(d, "done.json")
        if os.path.isfile(done):
            return read_json(done)
        grid = self.grid(k)
        seeds = self.starts(k)
        todo = [r for r in range(len(grid)) if not os.path.isfile(os.path.join(d, f"run_{r:03d}.json"))]
        self.store.log(f"iteration {k}: explore {len(grid)} MD runs ({len(grid) - len(todo)} done before), "
                       f"{self.cfg['explore']['engine']}, grade {self.cfg['grade']} (break {self.brk:g})")
        calc = None
        for r in todo:
            s, T, eps, p = grid[r]
            if self.cfg["explore"]["engine"] == "lammps":
                snaps, info = self.md_lammps(k, r, seeds[s], T, eps, p, models)
            else:
                if calc is None:
                    calc = self._calculator(models)
                snaps, info = self.md_ase(k, r, seeds[s], T, eps, p, calc)
            info.update(seed=s, temperature=T, strain=eps, pressure=p)
            atomic_atoms(os.path.join(d, f"run_{r:03d}.xyz"), snaps)
            atomic_json(os.path.join(d, f"run_{r:03d}.json"), info)
            self.store.log(f"  run {r}: seed {s} T {T:g} K strain {eps:+g}{'' if p is None else f' P {p:g} bar'}: "
                           f"{info['steps']} steps, max grade {info['max_grade']:.3g}"
                           f"{' HALTED' if info['halted'] else ''}{' (' + info['error'] + ')' if info.get('error') else ''}")
        runs = [read_json(os.path.join(d, f"run_{r:03d}.json")) for r in range(len(grid))]
        summary = {"runs": len(runs), "halted": sum(bool(x["halted"]) for x in runs),
                   "max_grade": max((x["max_grade"] for x in runs), default=0.0)}
        atomic_json(done, summary)
        return summary

    def starts(self, k: int) -> List[Any]:
        """The starting structure of each seed in iteration k: the seed itself, or with
        `explore.continue` the final state of the seed's last unhalted run of an earlier iteration
        (with `continue_halted`, of its last run, halted or not: a halted run's last snapshot below lo).
        `info["age"]`: the trajectory's steps since the seed structure (0 for the seed)."""
        from mlip.active.store import read_atoms

        starts = [bare(a, {"age": 0}) for a in self.seeds()]
        e = self.cfg["explore"]
        if not e.get("continue"):
            return starts
        halted_ok = bool(e.get("continue_halted"))
        found = set()
        for j in range(k - 1, -1, -1):  # latest iteration first
            if len(found) == len(starts):
                break
            d = self.store.it_dir(j, "explore")
            runs = sorted((f for f in os.listdir(d) if f.startswith("run_") and f.endswith(".json")),
                          reverse=True) if os.path.isdir(d) else []
            for f in runs:
                info = read_json(os.path.join(d, f))
                s = int(info["seed"])
                if s in found or (info["halted"] and not halted_ok) or not info["snapshots"] \
                        or info.get("pressure") is not None:
                    continue
                snaps = read_atoms(os.path.join(d, f[:-5] + ".xyz"))
                if info["halted"]:  # the last configuration the model still trusted
                    trusted = [a for a in snaps if float(a.info.get("grade", math.inf)) < self.lo]
                    if not trusted:
                        continue
                    last = trusted[-1]
                else:
                    last = snaps[-1]
                    if int(last.info.get("step", -1)) != int(info["steps"]):
                        continue  # the final state was not recorded (steps not a multiple of `every`)
                atoms = bare(last, {"age": int(last.info.get("age", last.info.get("step", 0)))})
                atoms.set_cell(atoms.cell[:] / (1.0 + float(info["strain"])), scale_atoms=True)
                starts[s] = atoms
                found.add(s)
        return starts

    def _md_rng(self, k: int, r: int) -> np.random.Generator:
        return np.random.default_rng([int(self.cfg["seed"]), 11, k, r])

    def _snapshot(self, atoms, k: int, r: int, step: int, g: float, T: float, eps: float, age0: int = 0):
        return bare(atoms, {"al_id": f"{k}:{r}:{step}", "grade": g, "temperature": T, "strain": eps, "step": step,
                            "age": age0 + step})

    def md_ase(self, k: int, r: int, seed_atoms, T: float, eps: float, p: Optional[float], calc
               ) -> Tuple[List[Any], Dict[str, Any]]:
        from ase import units
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        e = self.cfg["explore"]
        rng = self._md_rng(k, r)
        age0 = int(seed_atoms.info.get("age", 0))
        atoms = bare(seed_atoms)
        if eps:
            atoms.set_cell(atoms.cell[:] * (1.0 + eps), scale_atoms=True)
        atoms.calc = calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
        Stationary(atoms)
        dt = float(e["timestep"]) * units.fs
        if p is None:
            from ase.constraints import FixCom

            atoms.set_constraint(FixCom())
            dyn = Langevin(atoms, dt, temperature_K=T, friction=float(e["friction"]) / units.fs, rng=rng,
                           fixcm=False)
        else:
            from ase.md.nptberendsen import NPTBerendsen

            dyn = NPTBerendsen(atoms, dt, temperature_K=T, pressure_au=float(p) * units.bar,
                               taut=100 * units.fs, taup=500 * units.fs, compressibility_au=1e-6 / units.bar)
        every = int(e["every"])
        snaps: List[Any] = []
        grades: List[float] = []
        halted, error, step = False, None, 0
        last: Optional[Tuple[int, float, Any]] = None  # the previous step, if unsampled and in the window
        try:
            for step in range(1, int(e["steps"]) + 1):
                dyn.run(1)
                self.kill.tick("explore", k)
                g = self.grade(calc.results)
                if not np.isfinite(g):
                    g = math.inf
                if g >= self.brk and last is not None:
                    # halting: the last configuration before the break is the most informative one
                    # still inside the trust window (snapshots every `every` steps may have missed it)
                    snaps.append(self._snapshot(last[2], k, r, last[0], last[1], T, eps, age0))
                    grades.append(last[1])
                if step % every == 0 or g >= self.brk:
                    snaps.append(self._snapshot(atoms, k, r, step, g, T, eps, age0))
                    grades.append(g)
                    last = None
                elif self.lo <= g < self.hi:
                    last = (step, g, bare(atoms))
                else:
                    last = None
                if g >= self.brk:
                    halted = True
                    break
        except Exception as exc:  # unphysical geometry (atoms on top of each other, ...): halt the run
            halted, error = True, f"{type(exc).__name__}: {exc}"
        info = {"steps": step, "halted": halted, "snapshots": len(snaps),
                "max_grade": float(max(grades)) if grades else (math.inf if halted else 0.0)}
        if error:
            info["error"] = error
        return snaps, info

    def md_lammps(self, k: int, r: int, seed_atoms, T: float, eps: float, p: Optional[float],
                  models: List[str]) -> Tuple[List[Any], Dict[str, Any]]:
        """LAMMPS MD driven by model 0 (`pair_style mlip`); snapshots dumped every `every` steps are
        graded afterwards with the ASE calculator (γ / committee deviation, same engine), and the
        trajectory is cut at the first snapshot reaching the break threshold."""
        from mlip.lammps_support import run_lmp

        e = self.cfg["explore"]
        d = self.store.it_dir(k, "explore", f"lmp_{r:03d}")
        os.makedirs(d, exist_ok=True)
        age0 = int(seed_atoms.info.get("age", 0))
        atoms = bare(seed_atoms)
        if eps:
            atoms.set_cell(atoms.cell[:] * (1.0 + eps), scale_atoms=True)
        import ase.io

        species = self.species()
        ase.io.write(os.path.join(d, "seed.data"), atoms, format="lammps-data", specorder=species,
                     masses=True)
        rng = self._md_rng(k, r)
        vseed, lseed = (int(x) for x in rng.integers(1, 900000000, 2))
        every = int(e["every"])
        ens = (f"fix 1 all npt temp {T} {T} $(100*dt) iso {p} {p} $(1000*dt)" if p is not None else
               f"fix 1 all nve\nfix 2 all langevin {T} {T} {1.0 / float(e['friction']) / 1000.0} {lseed} zero yes")
        script = f"""units metal
atom_style atomic
boundary p p p
read_data seed.data
pair_style mlip {os.path.abspath(models[0])}
pair_coeff * * {' '.join(species)}
timestep {float(e['timestep']) / 1000.0}
velocity all create {T} {vseed} dist gaussian mom yes rot no
{ens}
dump 1 all custom {every} traj.dump id type x y z
dump_modify 1 sort id
thermo {every}
run {int(e['steps'])}
"""
        run_lmp(script, d, timeout=3600)
        traj = ase.io.read(os.path.join(d, "traj.dump"), ":", format="lammps-dump-text")
        calc = self._calculator(models)
        snaps, grades = [], []
        halted, step = False, 0
        for n, a in enumerate(traj[1:], start=1):
            step = n * every
            a = bare(a)
            a.set_chemical_symbols([species[z - 1] for z in traj[n].get_atomic_numbers()])
            a.calc = calc
            a.get_potential_energy()
            g = self.grade(calc.results)
            snaps.append(self._snapshot(a, k, r, step, g, T, eps, age0))
            grades.append(g)
            if g >= self.brk:
                halted = True
                break
        return snaps, {"steps": step, "halted": halted, "snapshots": len(snaps),
                       "max_grade": float(max(grades)) if grades else 0.0}
