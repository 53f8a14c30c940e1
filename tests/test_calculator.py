"""ASE calculator on the C++ engine: equals the eager model, finite-difference stress, ASE dynamics and
optimisers, NVE energy conservation, and clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import model_efv, random_structure, rel_err
from test_deepmd import small_dp


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from mlip.export import export_model

    model = small_dp()
    path = tmp_path_factory.mktemp("calc") / "dp.pt"
    export_model(model, str(path), dtype="float64")
    return model, str(path)


def test_calculator_equals_model(exported):
    from mlip import MLIPCalculator

    model, path = exported
    for atoms in (random_structure(7, 11), random_structure(8, 3, cell_scale=2.2, min_dist=0.8),
                  random_structure(9, 8, pbc=(True, False, True))):
        e, f, w = model_efv(model, atoms)
        calc = MLIPCalculator(path)
        atoms.calc = calc
        assert abs(atoms.get_potential_energy() - e) <= 1e-10 * abs(e)
        assert rel_err(atoms.get_forces(), f) <= 1e-10
        assert abs(atoms.get_potential_energies().sum() - e) <= 1e-10 * abs(e)
        assert rel_err(calc.results["virial"], w) <= 1e-10
        if atoms.pbc.all():
            s = -w / atoms.get_volume()
            assert rel_err(atoms.get_stress(), np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])) <= 1e-10


def test_stress_matches_finite_strain(exported):
    from mlip import MLIPCalculator

    _, path = exported
    atoms = random_structure(10, 10)
    atoms.calc = MLIPCalculator(path)
    numeric = atoms.calc.calculate_numerical_stress(atoms, d=1e-6, voigt=True)
    assert rel_err(atoms.get_stress(), numeric) < 1e-6


def test_optimizer_and_langevin_run(exported):
    from ase import units
    from ase.md.langevin import Langevin
    from ase.optimize import BFGS

    from mlip import MLIPCalculator

    _, path = exported
    atoms = random_structure(11, 8, cell_scale=6.0, min_dist=1.2)
    atoms.calc = MLIPCalculator(path)
    e0 = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=50)
    assert atoms.get_potential_energy() <= e0
    Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.02 / units.fs).run(5)
    assert np.isfinite(atoms.get_potential_energy())


def test_bad_inputs_give_clear_errors(exported, tmp_path):
    from ase import Atoms

    from mlip import MLIPCalculator

    _, path = exported
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        MLIPCalculator(str(tmp_path / "missing.pt"))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a model")
    with pytest.raises((ValueError, RuntimeError), match="corrupt.pt"):
        MLIPCalculator(str(bad))
    notmlip = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(notmlip))
    with pytest.raises((ValueError, RuntimeError), match="not an mlip export"):
        MLIPCalculator(str(notmlip))
    calc = MLIPCalculator(path)
    with pytest.raises(ValueError, match="element 'Cu'.*not in the model"):
        calc.get_potential_energy(Atoms("HCu", positions=[[0, 0, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match="0 atoms"):
        calc.get_potential_energy(Atoms(cell=[5, 5, 5], pbc=True))
    with pytest.raises(ValueError, match="atom 1 has a non-finite position"):
        calc.get_potential_energy(Atoms("HO", positions=[[0, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="atoms 0 and 2 are at the same position"):
        calc.get_potential_energy(Atoms("HOH", positions=[[0, 0, 0], [1, 0, 0], [0, 0, 0]]))
    # atom with no neighbours: energy = its species bias, zero force
    lone = Atoms("HO", positions=[[0, 0, 0], [20, 0, 0]], cell=[40, 40, 40], pbc=True)
    assert calc.get_potential_energy(lone) == pytest.approx(-4.5, abs=1e-12)
    assert np.all(calc.get_forces(lone) == 0)
