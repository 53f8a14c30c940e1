"""Molecular dynamics with any ASE calculator (used by `mlip md`): the ensembles people run first
(NVE, Langevin, Nosé–Hoover-chain and Bussi NVT, MTK NPT isotropic and anisotropic) through ASE's
integrators, an extxyz trajectory, a text log (temperature, energies, pressure, volume and the
ensemble's conserved quantity), and a progress bar."""
from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional

import numpy as np

EV_A3_PER_GPA = 1.0 / 160.21766208

ENSEMBLES = {
    "nve": "velocity Verlet",
    "langevin": "Langevin NVT (friction)",
    "nvt-nhc": "Nosé–Hoover chain NVT (tdamp)",
    "bussi": "Bussi stochastic velocity rescaling NVT (tdamp)",
    "npt": "MTK NPT, isotropic cell fluctuations (tdamp, pdamp, pressure)",
    "npt-aniso": "MTK NPT, fully flexible cell (tdamp, pdamp, pressure)",
}
ALIASES = {"nvt": "langevin"}


def _check(name: str, value: float, positive: bool = True, allow_zero: bool = False) -> float:
    """A user number for MD: finite, and positive (or ≥ 0) where it must be; one clear line if not."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v:g}")
    if positive and (v < 0 or (v == 0 and not allow_zero)):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v:g}")
    return v


def make_dynamics(atoms, ensemble: str, timestep_fs: float, temperature_K: float,
                  friction_per_fs: float = 0.01, tdamp_fs: float = 100.0, pdamp_fs: float = 1000.0,
                  pressure_gpa: float = 0.0, rng: Optional[np.random.Generator] = None):
    """The ASE integrator of `ensemble` (see ENSEMBLES) with the arguments checked. Pressure in GPa,
    damping times in fs."""
    from ase import units

    ensemble = ALIASES.get(ensemble, ensemble)
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble '{ensemble}' (choose from {', '.join(ENSEMBLES)})")
    dt = _check("timestep (--dt, fs)", timestep_fs) * units.fs
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    temp = _check("temperature (K)", temperature_K)
    if ensemble == "langevin":
        from ase.md.langevin import Langevin

        gamma = _check("friction (1/fs)", friction_per_fs)
        return Langevin(atoms, dt, temperature_K=temp, friction=gamma / units.fs, rng=rng)
    tdamp = _check("tdamp (fs)", tdamp_fs) * units.fs
    if ensemble == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=temp, taut=tdamp, rng=rng)
    if ensemble == "nvt-nhc":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, dt, temperature_K=temp, tdamp=tdamp)
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, MTKNPT

    if not atoms.pbc.all():
        raise ValueError(f"ensemble {ensemble} needs a cell periodic in x, y and z (pbc is "
                         f"{atoms.pbc.tolist()})")
    pdamp = _check("pdamp (fs)", pdamp_fs) * units.fs
    p_au = _check("pressure (GPa)", pressure_gpa, positive=False) * EV_A3_PER_GPA
    cls = IsotropicMTKNPT if ensemble == "npt" else MTKNPT
    return cls(atoms, dt, temperature_K=temp, pressure_au=p_au, tdamp=tdamp, pdamp=pdamp)


def run_md(atoms, calc, steps: int = 1000, timestep_fs: float = 1.0, temperature_K: float = 300.0,
           ensemble: str = "nve", friction_per_fs: float = 0.01, seed: int = 1,
           trajectory: Optional[str] = None, log: Optional[str] = None, every: int = 10,
           progress: bool = True, init_velocities: bool = True, tdamp_fs: float = 100.0,
           pdamp_fs: float = 1000.0, pressure_gpa: float = 0.0) -> Dict[str, Any]:
    """Run MD and return {steps, drift_per_atom (eV/atom, last − first of the ensemble's conserved
    quantity: the total energy in NVE), max_dev_per_atom, seconds, us_per_atom_step, and the means
    over the second half of the run of temperature_K, pressure_GPa and volume_A3}."""
    from ase.io import write
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps}")
    if int(every) != every or every < 1:
        raise ValueError(f"every (log interval) must be an integer >= 1, got {every}")
    _check("temperature (K)", temperature_K, allow_zero=True)
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if init_velocities:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
    dyn = make_dynamics(atoms, ensemble, timestep_fs, temperature_K, friction_per_fs, tdamp_fs,
                        pdamp_fs, pressure_gpa, rng)
    periodic = bool(atoms.pbc.all())
    conserved_fn = getattr(dyn, "get_conserved_energy", None)
    n = len(atoms)

    def conserved(etot: float) -> float:
        if conserved_fn is not None:  # Nosé–Hoover chain, MTK: total energy + thermostat/barostat terms
            return float(conserved_fn())
        # Bussi: total energy minus the energy the thermostat has put in (Langevin keeps no account)
        return etot - float(getattr(dyn, "transferred_energy", 0.0))

    e0 = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    c0 = conserved(e0)
    cons = [c0]
    rows = []  # (step, temperature, pressure, volume) of each logged step, for the averages
    from mlip.io.safe_write import atomic_write, open_append

    if log:  # a new log (atomically), then checked appends: a full disk stops the run with one line
        atomic_write(log, "")
    log_fh = open_append(log) if log else None
    if log_fh:
        log_fh.write("# step time_fs epot_eV ekin_eV etot_eV temperature_K pressure_GPa volume_A3 "
                     "conserved_eV drift_eV_per_atom\n")
    if trajectory:  # truncate; frames are appended by the observer (step 0 included)
        atomic_write(trajectory, "")
    traj_fh = open_append(trajectory) if trajectory else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"md {ensemble}", unit="step", dynamic_ncols=True)

    def observe() -> None:
        step = dyn.nsteps
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        et = epot + ekin
        c = conserved(et)
        if step > 0:  # ASE also calls observers before the first step
            cons.append(c)
        if step % every == 0:
            temp = atoms.get_temperature()
            vol = atoms.get_volume() if periodic else float("nan")
            # instantaneous pressure, kinetic (ideal-gas) part included, as barostats define it
            press = (-np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3
                     / EV_A3_PER_GPA) if periodic else float("nan")
            rows.append((step, temp, press, vol))
            if log_fh:
                log_fh.write(f"{step} {step*timestep_fs:.3f} {epot:.10f} {ekin:.10f} {et:.10f} {temp:.3f} "
                             f"{press:.6f} {vol:.6f} {c:.10f} {(c-c0)/n:.3e}\n")
            if traj_fh is not None:
                write(traj_fh, atoms, format="extxyz")
                traj_fh.flush()
            if bar is not None:
                post = {"T": f"{temp:.0f}K", "drift": f"{(c-c0)/n:.1e}"}
                if periodic:
                    post["P"] = f"{press:.2f}GPa"
                bar.set_postfix(post, refresh=False)
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
        if traj_fh is not None:
            traj_fh.close()
    sec = time.perf_counter() - t0
    c = np.asarray(cons)
    half = np.asarray([r for r in rows if r[0] >= steps / 2] or rows, dtype=float)
    return {
        "ensemble": ALIASES.get(ensemble, ensemble),
        "steps": steps,
        "drift_per_atom": float((c[-1] - c[0]) / n),
        "max_dev_per_atom": float(np.max(np.abs(c - c[0])) / n),
        "seconds": sec,
        "us_per_atom_step": sec / max(steps, 1) / n * 1e6,
        "mean_temperature_K": float(half[:, 1].mean()),
        "mean_pressure_GPa": float(half[:, 2].mean()),
        "mean_volume_A3": float(half[:, 3].mean()),
    }
