"""The training loss's Huber option (`loss.huber`): squared errors inside ±δ, a linear tail of the same
slope beyond, per term; terms without a δ unchanged."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from mlip.train.loss import loss_terms


def _batch_and_pred():
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([2.0, 3.0], dtype=torch.float64)
    forces = torch.randn(5, 3, generator=g, dtype=torch.float64)
    batch = SimpleNamespace(n_atoms=n, energy=torch.tensor([-1.0, -2.0], dtype=torch.float64),
                            energy_mask=torch.ones(2, dtype=torch.float64), forces=forces,
                            force_mask=torch.ones(5, dtype=torch.float64), node_frame=torch.tensor([0, 0, 1, 1, 1]),
                            virial=torch.zeros(2, 3, 3, dtype=torch.float64),
                            virial_mask=torch.ones(2, dtype=torch.float64))
    df = torch.tensor([[0.01, -0.02, 0.5], [-0.3, 0.0, 0.04], [2.0, -0.01, 0.0], [0.0, 0.0, 0.0],
                       [0.03, -1.0, 0.2]], dtype=torch.float64)
    pred = {"energy": batch.energy + torch.tensor([0.002, -0.6], dtype=torch.float64), "forces": forces + df,
            "virial": torch.full((2, 3, 3), 0.3, dtype=torch.float64)}
    return batch, pred, df


def _rho(d, delta):
    a = abs(d)
    return d * d if a <= delta else delta * (2 * a - delta)


def test_huber_terms_against_their_definition():
    batch, pred, df = _batch_and_pred()
    plain = loss_terms(pred, batch)
    hub = loss_terms(pred, batch, huber={"forces": 0.05, "energy": 0.01})
    frames = [[0, 1], [2, 3, 4]]
    for f, atoms in enumerate(frames):
        want = sum(_rho(float(df[i, c]), 0.05) for i in atoms for c in range(3)) / (3 * len(atoms))
        assert abs(float(hub["forces"][f]) - want) < 1e-14
        sq = sum(float(df[i, c]) ** 2 for i in atoms for c in range(3)) / (3 * len(atoms))
        assert abs(float(plain["forces"][f]) - sq) < 1e-14
    de = [0.002 / 2, -0.6 / 3]
    for f in range(2):
        assert abs(float(hub["energy"][f]) - _rho(de[f], 0.01)) < 1e-15
    assert float(hub["energy"][0]) == float(plain["energy"][0])  # inside ±δ: the square
    assert float(hub["energy"][1]) < float(plain["energy"][1])   # outside: linear, smaller
    assert torch.equal(hub["virial"], plain["virial"])           # no δ for the virial


def test_huber_gradient_is_continuous_and_bounded():
    d = torch.tensor([0.0499999, 0.0500001, 3.0], dtype=torch.float64, requires_grad=True)
    batch = SimpleNamespace(n_atoms=torch.tensor([1.0], dtype=torch.float64),
                            energy=torch.zeros(1, dtype=torch.float64), energy_mask=torch.zeros(1, dtype=torch.float64),
                            forces=torch.zeros(1, 3, dtype=torch.float64), force_mask=torch.ones(1, dtype=torch.float64),
                            node_frame=torch.tensor([0]), virial=torch.zeros(1, 3, 3, dtype=torch.float64),
                            virial_mask=torch.zeros(1, dtype=torch.float64))
    out = loss_terms({"energy": torch.zeros(1, dtype=torch.float64), "forces": d[None, :]}, batch,
                     huber={"forces": 0.05})
    (grad,) = torch.autograd.grad(out["forces"].sum(), d)
    assert torch.allclose(grad * 3.0, torch.tensor([0.0999998, 0.1, 0.1], dtype=torch.float64), atol=1e-9)
