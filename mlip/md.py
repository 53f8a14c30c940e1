"""Molecular dynamics with any ASE calculator (used by `mlip md`): velocity-Verlet NVE or Langevin NVT,
an extxyz trajectory, a text log with the total-energy drift per atom, and a progress bar."""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

import numpy as np


def run_md(atoms, calc, steps: int = 1000, timestep_fs: float = 1.0, temperature_K: float = 300.0,
           ensemble: str = "nve", friction_per_fs: float = 0.01, seed: int = 1,
           trajectory: Optional[str] = None, log: Optional[str] = None, every: int = 10,
           progress: bool = True, init_velocities: bool = True) -> Dict[str, Any]:
    """Run MD and return {drift_per_atom (eV/atom, last − first total energy), max_dev_per_atom,
    steps, seconds, us_per_atom_step}."""
    from ase import units
    from ase.io import write
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if timestep_fs <= 0:
        raise ValueError(f"timestep must be positive, got {timestep_fs} fs")
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if init_velocities:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, dt)
    elif ensemble in ("langevin", "nvt"):
        dyn = Langevin(atoms, dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, rng=rng)
    else:
        raise ValueError(f"unknown ensemble '{ensemble}' (nve, langevin)")
    n = len(atoms)
    e0 = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    etot = [e0]
    log_fh = open(log, "w") if log else None
    if log_fh:
        log_fh.write("# step time_fs epot_eV ekin_eV etot_eV temperature_K drift_eV_per_atom\n")
    if trajectory:  # truncate; frames are appended by the observer (step 0 included)
        open(trajectory, "w").close()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"md {ensemble}", unit="step", dynamic_ncols=True)

    def observe() -> None:
        step = dyn.nsteps
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        et = epot + ekin
        if step > 0:  # ASE also calls observers before the first step
            etot.append(et)
        if step % every == 0:
            temp = atoms.get_temperature()
            if log_fh:
                log_fh.write(f"{step} {step*timestep_fs:.3f} {epot:.10f} {ekin:.10f} {et:.10f} {temp:.3f} "
                             f"{(et-e0)/n:.3e}\n")
            if trajectory:
                write(trajectory, atoms, format="extxyz", append=True)
            if bar is not None:
                bar.set_postfix({"T": f"{temp:.0f}K", "drift": f"{(et-e0)/n:.1e}"}, refresh=False)
        if bar is not None and step > 0:
            bar.update(1)

    dyn.attach(observe, interval=1)
    t0 = time.perf_counter()
    try:
        dyn.run(steps)
    finally:
        if bar is not None:
            bar.close()
        if log_fh:
            log_fh.close()
    sec = time.perf_counter() - t0
    et = np.asarray(etot)
    return {
        "steps": steps,
        "drift_per_atom": float((et[-1] - et[0]) / n),
        "max_dev_per_atom": float(np.max(np.abs(et - et[0])) / n),
        "seconds": sec,
        "us_per_atom_step": sec / max(steps, 1) / n * 1e6,
    }
