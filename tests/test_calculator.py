"""ASE calculator on the C++ engine: equals the eager model, finite-difference stress, ASE dynamics and
optimisers, NVE energy conservation, and clear errors for bad input."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import damage_export, model_efv, random_structure, rel_err
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


def test_damaged_export_refused(exported, tmp_path):
    """Issue 14, item 1: 64 bytes flipped inside a stored tensor. torch loads such a file without a
    word (other energies); the engine checks every zip entry against its CRC first, and so does the
    metadata reader."""
    from mlip import MLIPCalculator
    from mlip.io.export_metadata import read_metadata

    _, path = exported
    bad = str(tmp_path / "damaged.pt")
    entry = damage_export(path, bad)
    line = f"model file '{bad}' is damaged: entry '{entry}' fails its CRC check"
    with pytest.raises(ValueError) as exc:
        MLIPCalculator(bad)
    assert line in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ValueError) as exc:
        read_metadata(bad)
    assert line in str(exc.value)
    with pytest.raises(ValueError, match="is damaged: it has no zip directory"):  # a truncated copy
        (tmp_path / "cut.pt").write_bytes(open(path, "rb").read()[:-200])
        MLIPCalculator(str(tmp_path / "cut.pt"))


@pytest.mark.parametrize("value", [5000, 0, -3, 2.5, "4", True, 10**30])
def test_num_threads_bounded(exported, value):
    """Issue 14, item 8: num_threads=5000 segfaulted (libtorch's thread pool); one rule, the
    engine's: an integer from 1 to max(4 x CPUs, 64)."""
    from mlip import MLIPCalculator, _core

    _, path = exported
    hi = _core.max_num_threads()
    with pytest.raises(ValueError, match=rf"^num_threads must be an integer from 1 to {hi} \(this machine has "
                                         rf"\d+ CPUs\), got {re.escape(repr(value))}$"):
        MLIPCalculator(path, num_threads=value)
    assert MLIPCalculator(path, num_threads=hi).engine.num_threads == hi


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5", "99999"])
def test_mlip_num_threads_environment_checked(exported, monkeypatch, value):
    """Issue 14, item 15: MLIP_NUM_THREADS=abc gave "invalid literal for int()", 0 and -3 were
    accepted; now one line naming the variable."""
    from mlip import MLIPCalculator

    _, path = exported
    monkeypatch.setenv("MLIP_NUM_THREADS", value)
    with pytest.raises(ValueError, match=rf"^environment variable MLIP_NUM_THREADS must be an integer from 1 to "
                                         rf"\d+ \(this machine has \d+ CPUs\), got '{re.escape(value)}'$"):
        MLIPCalculator(path)
    monkeypatch.setenv("MLIP_NUM_THREADS", "2")
    assert MLIPCalculator(path).engine.num_threads == 2
    assert MLIPCalculator(path, num_threads=1).engine.num_threads == 1  # an explicit count wins


def test_atoms_at_the_same_position_across_periodic_images(exported):
    """Two atoms 1e-13 A apart through the periodic boundary (x = 0 and x = L - 1e-13): the positions
    differ, only the neighbour distance shows it; the engine refuses edges shorter than 1e-6 A."""
    from ase import Atoms

    from mlip import MLIPCalculator

    _, path = exported
    calc = MLIPCalculator(path)
    atoms = Atoms("HOH", positions=[[0, 1, 1], [3, 1, 1], [8 - 1e-13, 1, 1]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(ValueError, match=r"atoms (0 and 2|2 and 0) are at the same position \(1e-13 A apart, "
                                         r"closer than 1e-06 A"):
        calc.get_potential_energy(atoms)
    atoms.positions[2, 0] = 8 - 1e-3  # close, but a distance the model can evaluate
    assert np.isfinite(calc.get_potential_energy(atoms))


def test_device_option(exported):
    """device='auto' runs where libtorch finds a GPU, else on the CPU (the numbers of device='cpu');
    'cuda' without one, or an unknown device, is one clear ValueError."""
    import torch

    from mlip import MLIPCalculator

    _, path = exported
    atoms = random_structure(3, 12, cell_scale=6.0)
    res = {}
    for device in ("cpu", "auto"):
        calc = MLIPCalculator(path, device=device)
        atoms.calc = calc
        res[device] = (atoms.get_potential_energy(), atoms.get_forces().copy())
        assert calc.engine.device == ("cuda:0" if device == "auto" and torch.cuda.is_available() else "cpu")
    assert abs(res["auto"][0] - res["cpu"][0]) <= 1e-10 * max(1.0, abs(res["cpu"][0]))
    np.testing.assert_allclose(res["auto"][1], res["cpu"][1], rtol=0, atol=1e-9)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': this libtorch sees no CUDA device"):
            MLIPCalculator(path, device="cuda")
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got 'gpu'"):
        MLIPCalculator(path, device="gpu")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                    reason="no CUDA device on this machine (CPU-only torch or no GPU)")
def test_cuda_matches_cpu(exported):  # pragma: no cover - needs a GPU
    from mlip import MLIPCalculator

    _, path = exported
    atoms = random_structure(4, 20, cell_scale=7.0)
    out = []
    for device in ("cpu", "cuda"):
        atoms.calc = MLIPCalculator(path, device=device)
        out.append((atoms.get_potential_energy(), atoms.get_forces().copy(), atoms.get_stress().copy()))
    assert abs(out[0][0] - out[1][0]) < 1e-8
    np.testing.assert_allclose(out[1][1], out[0][1], atol=1e-8)
    np.testing.assert_allclose(out[1][2], out[0][2], atol=1e-8)
