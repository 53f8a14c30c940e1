"""Committee (model deviation) in the ASE calculator (issue 5, part 2): mean predictions, DeePMD-kit's
deviation definitions, one neighbour list with per-model cutoff filtering, γ with a committee."""
from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def dp(seed, rcut):
    from mlip.models.deepmd import DeepPotSeA

    m = DeepPotSeA(["Cu", "Ag"], rcut=rcut, rcut_smth=2.0, sel=[40, 40], neuron=[8, 16], axis_neuron=4,
                   fitting_neuron=[16, 16], seed=seed).double()
    m.set_energy_bias(torch.tensor([-3.5, -2.8], dtype=torch.float64))
    return m


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    from mlip.export import export_model

    d = tmp_path_factory.mktemp("committee")
    paths = []
    for k, rc in enumerate((4.2, 3.7, 4.0)):  # different cutoffs: edges filtered per model
        p = str(d / f"m{k}.pt")
        export_model(dp(k, rc), p)
        paths.append(p)
    return paths


def structure(seed=3):
    from ase.build import bulk

    at = bulk("Cu", "fcc", a=3.65, cubic=True).repeat(2)
    at.symbols[[1, 6, 11]] = "Ag"
    at.rattle(0.12, seed=seed)
    return at


def test_committee_mean_and_deviation(committee):
    from mlip import MLIPCalculator

    at = structure()
    singles = []
    for p in committee:
        a = at.copy()
        a.calc = MLIPCalculator(p)
        a.get_potential_energy()
        singles.append(dict(a.calc.results))
    calc = MLIPCalculator(committee)
    assert calc.cutoff == 4.2 and len(calc.engines) == 3
    at.calc = calc
    e = at.get_potential_energy()
    res = calc.results
    n = len(at)
    E = np.array([s["energy"] for s in singles])
    F = np.stack([s["forces"] for s in singles])
    W = np.stack([s["virial"] for s in singles])
    # every member sees exactly its own neighbour list (filtered from the largest)
    np.testing.assert_allclose(res["committee_energy"], E, rtol=1e-13)
    np.testing.assert_allclose(res["committee_forces"], F, rtol=1e-12, atol=1e-13)
    assert e == pytest.approx(E.mean(), rel=1e-13)
    np.testing.assert_allclose(at.get_forces(), F.mean(0), atol=1e-12)
    np.testing.assert_allclose(res["energies"], np.mean([s["energies"] for s in singles], 0), atol=1e-12)
    np.testing.assert_allclose(at.get_stress(), np.mean([s["stress"] for s in singles], 0), atol=1e-12)
    # deviations (DeePMD-kit's model_devi definitions), written out independently
    fdev = np.array([np.sqrt(np.mean([np.sum((F[m, i] - F[:, i].mean(0)) ** 2) for m in range(3)])) for i in range(n)])
    np.testing.assert_allclose(res["force_deviation"], fdev, rtol=1e-10)
    assert res["max_force_deviation"] == pytest.approx(fdev.max(), rel=1e-12)
    assert res["min_force_deviation"] == pytest.approx(fdev.min(), rel=1e-12)
    assert res["avg_force_deviation"] == pytest.approx(fdev.mean(), rel=1e-12)
    assert res["energy_deviation"] == pytest.approx(np.std(E / n), rel=1e-10)
    vdev = np.std(W / n, axis=0)
    np.testing.assert_allclose(res["virial_deviation"], vdev, rtol=1e-10)
    assert res["max_virial_deviation"] == pytest.approx(vdev.max(), rel=1e-12)
    assert res["avg_virial_deviation"] == pytest.approx(np.linalg.norm(vdev) / 3, rel=1e-12)
    assert res["max_force_deviation"] > 1e-5  # independent initialisations disagree


def test_single_model_has_no_deviation_keys(committee):
    from mlip import MLIPCalculator

    at = structure()
    at.calc = MLIPCalculator(committee[:1])
    at.get_potential_energy()
    assert "force_deviation" not in at.calc.results


def test_committee_gamma_is_max_over_graded_members(committee, tmp_path):
    from ase.build import bulk

    from mlip import MLIPCalculator
    from mlip.active.grade import build_active_set, export_graded, grade_frames
    from mlip.data import Frame

    frames = []
    for k in range(3):
        a = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(2)
        a.symbols[[2, 5]] = "Ag"
        a.rattle(0.05, seed=k)
        frames.append(Frame.from_atoms(a))
    m0, m1 = dp(0, 4.2), dp(1, 3.7)
    a0, a1 = build_active_set(m0, frames), build_active_set(m1, frames)
    p0, p1 = str(tmp_path / "g0.pt"), str(tmp_path / "g1.pt")
    export_graded(m0, p0, a0)
    export_graded(m1, p1, a1)
    at = structure(5)
    at.calc = MLIPCalculator([p0, p1, committee[2]])
    at.get_potential_energy()
    fr = Frame.from_atoms(at)
    ref = np.maximum(grade_frames(m0, [fr], a0)[0], grade_frames(m1, [fr], a1)[0])
    np.testing.assert_allclose(at.calc.results["atom_gamma"], ref, rtol=1e-6)
    assert at.calc.results["gamma"] == pytest.approx(ref.max(), rel=1e-6)
    off = MLIPCalculator([p0, p1], gamma=False)
    at.calc = off
    at.get_potential_energy()
    assert "gamma" not in off.results


def test_committee_species_must_agree(committee, tmp_path):
    from mlip import MLIPCalculator
    from mlip.export import export_model
    from mlip.models.deepmd import DeepPotSeA

    other = str(tmp_path / "other.pt")
    export_model(DeepPotSeA(["Ag", "Cu"], rcut=4.0, rcut_smth=2.0, sel=[40, 40], neuron=[4, 8], axis_neuron=2,
                            fitting_neuron=[8]).double(), other)
    with pytest.raises(ValueError, match="same species"):
        MLIPCalculator([committee[0], other])
    with pytest.raises(ValueError, match="no model"):
        MLIPCalculator([])
