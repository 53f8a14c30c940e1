"""Dynamics and thermodynamics of pair_style mlip in LAMMPS: NVE energy conservation, pressure and
shear virial against finite strains of the box, NPT."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lammps_util import (  # noqa: E402
    NKTV2P_METAL,
    export_toy,
    fcc_structure,
    requires_lammps,
    run,
    write_data,
)

from mlip import lammps_support as ls  # noqa: E402

pytestmark = [requires_lammps, pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lammps_md_models")
    return {
        "eam": export_toy(str(d / "eam.pt"), "eam", cutoff=5.0),
        "mp": export_toy(str(d / "mp.pt"), "mp", cutoff=4.0),
    }


def test_nve_energy_drift(tmp_path, models):
    """velocity Verlet (fix nve), dt = 1 fs, 2000 steps, 300 K: drift <= 5e-5 eV/atom."""
    atoms = fcc_structure(3.615, (3, 3, 3), species=("Cu", "Ag"), seed=10, rattle=0.0, fraction=0.0)
    write_data(atoms, str(tmp_path / "data.lmp"), ["Cu"])
    script = f"""
units metal
atom_style atomic
read_data data.lmp
pair_style mlip {models['eam']}
pair_coeff * * Cu
velocity all create 600 12345 loop geom
timestep 0.001
fix 1 all nve
thermo 20
thermo_style custom step temp pe ke etotal
thermo_modify format float %.17g norm no
run 2000
"""
    out = run(script, tmp_path).stdout
    rows = ls.parse_thermo(out)
    assert len(rows) == 101
    n = len(atoms)
    t = np.array([r["Step"] for r in rows]) * 0.001
    etot = np.array([r["TotEng"] for r in rows])
    temp = np.array([r["Temp"] for r in rows])
    max_dev = float(np.max(np.abs(etot - etot[0]))) / n
    slope = float(np.polyfit(t, etot, 1)[0])
    drift = abs(slope) * (t[-1] - t[0]) / n
    print(f"NVE {n} atoms, mean T = {temp[10:].mean():.0f} K: max |E-E0| = {max_dev:.2e} eV/atom, "
          f"linear drift over 2 ps = {drift:.2e} eV/atom")
    assert 200 < temp[10:].mean() < 400  # equipartition: 600 K initial -> ~300 K
    assert drift <= 5e-5
    assert max_dev <= 5e-4  # fluctuations of the Verlet shadow Hamiltonian


def _box_energy(tmp_path, model, elements, boxes, name):
    """pe and virial pressure tensor for each box (lx ly lz xy xz yz), atoms remapped affinely."""
    lines = [
        "units metal", "atom_style atomic", "atom_modify map array", "read_data data.lmp",
        f"pair_style mlip {model}", f"pair_coeff * * {' '.join(elements)}",
        "compute pv all pressure NULL virial",
        "thermo_style custom step pe vol press c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6]",
        "thermo_modify format float %.17g norm no",
    ]
    for box in boxes:
        lx, ly, lz, xy, xz, yz = (float(x) for x in box)
        lines.append(f"change_box all x final 0 {lx!r} y final 0 {ly!r} z final 0 {lz!r} "
                     f"xy final {xy!r} xz final {xz!r} yz final {yz!r} remap units box")
        lines.append("run 0")
    out = run("\n".join(lines) + "\n", tmp_path, input_name=f"in.{name}").stdout
    rows = ls.parse_thermo(out)
    assert len(rows) == len(boxes), out[-2000:]
    return rows


@pytest.mark.parametrize("kind", ["eam", "mp"])
def test_pressure_equals_minus_dE_dV(tmp_path, models, kind):
    """thermo press (no velocities: virial only) = -dE/dV by finite isotropic strain (<= 1e-6),
    and the shear virials = -dE/dgamma for tilt strains."""
    atoms = fcc_structure(3.65, (3, 3, 3), seed=11, tilt=(0.08, -0.05, 0.06), rattle=0.08)
    write_data(atoms, str(tmp_path / "data.lmp"), ["Cu", "Ag"])
    c = atoms.cell[:]
    lx, ly, lz, xy, xz, yz = c[0, 0], c[1, 1], c[2, 2], c[1, 0], c[2, 0], c[2, 1]
    h = 1e-4
    iso = [1 - 2 * h, 1 - h, 1.0, 1 + h, 1 + 2 * h]
    boxes = [(lx * s, ly * s, lz * s, xy * s, xz * s, yz * s) for s in iso]
    # shear x += g*y (xy), x += g*z (xz), y += g*z (yz): the box stays lower triangular
    shears = []
    for comp in ("xy", "xz", "yz"):
        for g in (-2 * h, -h, h, 2 * h):
            b = [lx, ly, lz, xy, xz, yz]
            if comp == "xy":
                b[3] = xy + g * ly
                b[4] = xz + g * yz
            elif comp == "xz":
                b[4] = xz + g * lz
            else:
                b[5] = yz + g * lz
            shears.append(tuple(b))
    rows = _box_energy(tmp_path, models[kind], ["Cu", "Ag"], boxes + shears, "strain")
    e = np.array([r["PotEng"] for r in rows[:5]])
    v = np.array([r["Volume"] for r in rows[:5]])
    # dE/ds (5-point stencil in s), dV/ds = 3 V0 at s = 1
    dE_ds = (e[0] - 8 * e[1] + 8 * e[3] - e[4]) / (12 * h)
    minus_dE_dV = -dE_ds / (3 * v[2])
    p_thermo = rows[2]["Press"] / NKTV2P_METAL
    err = abs(p_thermo - minus_dE_dV) / abs(minus_dE_dV)
    print(f"{kind}: P(thermo) = {rows[2]['Press']:.10g} bar, -dE/dV = {minus_dE_dV * NKTV2P_METAL:.10g} bar, "
          f"rel. diff {err:.2e}")
    assert err <= 1e-6
    # shear: W_ba = -dE/dgamma, and pressure tensor P_ab = W_ab / V
    w_thermo = {k: rows[2][f"c_pv[{m}]"] * v[2] / NKTV2P_METAL for k, m in (("xy", 4), ("xz", 5), ("yz", 6))}
    for n, comp in enumerate(("xy", "xz", "yz")):
        es = np.array([r["PotEng"] for r in rows[5 + 4 * n: 9 + 4 * n]])
        dE = (es[0] - 8 * es[1] + 8 * es[2] - es[3]) / (12 * h)
        err_s = abs(w_thermo[comp] + dE) / max(abs(dE), 1e-3)
        print(f"{kind}: W_{comp} = {w_thermo[comp]:.10g} eV, -dE/dgamma = {-dE:.10g} eV, rel. diff {err_s:.2e}")
        assert err_s <= 1e-6


def test_npt_runs(tmp_path, models):
    """fix npt uses the virial: the box relaxes towards zero pressure."""
    atoms = fcc_structure(3.75, (3, 3, 3), seed=12, rattle=0.0, fraction=0.0)  # expanded: P < 0
    write_data(atoms, str(tmp_path / "data.lmp"), ["Cu"])
    script = f"""
units metal
atom_style atomic
read_data data.lmp
pair_style mlip {models['eam']}
pair_coeff * * Cu
velocity all create 300 777 loop geom
timestep 0.001
fix 1 all npt temp 300 300 0.1 iso 0 0 1.0
thermo 50
thermo_style custom step temp pe press vol
thermo_modify format float %.17g
run 300
"""
    rows = ls.parse_thermo(run(script, tmp_path).stdout)
    v0, v1 = rows[0]["Volume"], rows[-1]["Volume"]
    assert rows[0]["Press"] < 0 and v1 < v0, (rows[0], rows[-1])
