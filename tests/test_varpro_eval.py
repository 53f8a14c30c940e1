"""varpro's evaluation (`mlip.train.projection`): the MTP's analytic radial gradient equals autograd,
an evaluation equals the linear solve + the autograd loss gradient it replaces, and a fit on two
worker processes gives the same parameters as on one."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mlip.graph import build_graphs, collate
from mlip.models.base import predict
from mlip.models.mtp import MTP
from mlip.train.full_batch import (FullBatch, LossWeights, batch_loss_sum, full_loss, get_flat, loss_and_grad,
                                   solve_linear)
from mlip.train.loss import loss_terms, weighted_loss_sum
from mlip.train.projection import ProjectedEvaluator, split_segments
from mlip.train.varpro import VarPro

W = LossWeights(energy=1.0, forces=0.01, virial=0.001)


@pytest.fixture(scope="module")
def frames():
    from mlip.datagen import generate_frames

    return generate_frames("emt", "Cu", n_frames=10, size=2, md_steps=5, seed=3)


def _model(frames, species=("Cu",), level=10):
    m = MTP(list(species), level=level, cutoff=4.5, seed=2, init_noise=0.3).double()
    m.fit_statistics(frames)
    return m


@pytest.mark.parametrize("n_species", [1, 2])
def test_radial_vjp_equals_autograd(frames, n_species):
    m = _model(frames, ("Cu", "Ag")[:n_species])
    g = torch.Generator().manual_seed(0)
    graphs = [dataclasses.replace(x, species=torch.randint(0, n_species, x.species.shape, generator=g))
              for x in build_graphs(frames[:4], ["Cu"], m.cutoff, torch.float64)]
    b = collate(graphs)
    with torch.no_grad():
        m.moment_coeffs.normal_(0.0, 1.0, generator=g)
    (ref,) = torch.autograd.grad(batch_loss_sum(m, b, W, create_graph=True), m.radial_coeffs)
    pred = predict(m, b)
    leaves = [pred[k].clone().requires_grad_(True) for k in ("energy", "forces", "virial")]
    loss = weighted_loss_sum(loss_terms(dict(zip(("energy", "forces", "virial"), leaves)), b), b, 1.0, 0.01, 0.001)
    gE, gF, gW = torch.autograd.grad(loss, leaves)
    got = m.linear_design_vjp(b.species, b.edge_index, b.edge_vec, b.node_frame, b.edge_frame, gE, gF, gW)
    assert float((got["radial_coeffs"] - ref).norm() / ref.norm()) < 1e-12


def test_evaluation_is_linear_solve_plus_gradient(frames):
    m = _model(frames)
    data = FullBatch(build_graphs(frames, m.species, m.cutoff, torch.float64), max_edges=3000)
    ref = copy.deepcopy(m)
    loss_qr, _ = solve_linear(ref, data, W)
    with ProjectedEvaluator(m, data, W, workers=1) as ev:
        assert ev.n_segments > 1
        loss, grads = ev.evaluate()
    assert loss == pytest.approx(loss_qr, rel=1e-9)
    assert loss == pytest.approx(full_loss(m, data, W), rel=1e-9)  # the loss at the solved ξ
    xi = get_flat([m.species_coeffs, m.moment_coeffs])
    assert torch.allclose(xi, get_flat([ref.species_coeffs, ref.moment_coeffs]), rtol=1e-7, atol=1e-9)
    _, (g_ref,) = loss_and_grad(m, data, W, [m.radial_coeffs])  # autograd, same parameters
    assert float((grads[0] - g_ref).norm() / g_ref.norm()) < 1e-8


def test_fit_on_two_workers_equals_one(frames):
    base = _model(frames, level=8)
    graphs = build_graphs(frames, base.species, base.cutoff, torch.float64)
    train, val = FullBatch(graphs[:8], max_edges=3000), FullBatch(graphs[8:], max_edges=3000)
    opts = {"max_iter": 6, "history": 10, "patience": 10, "min_rel_improvement": 1e-6}
    params, logs = [], []
    for workers in (1, 2):
        m = copy.deepcopy(base)
        opt = VarPro(m, train, val, W, opts, log=logs.append)
        opt.workers = workers
        opt.run(lambda: False, lambda *a: None)
        assert opt.evaluator is None  # the worker processes are gone
        params.append(get_flat(list(m.parameters())))
    assert any("2 processes" in line for line in logs)
    assert float((params[1] - params[0]).norm() / params[0].norm()) < 1e-10


def test_split_segments_is_contiguous_and_balanced():
    assert split_segments([5, 5, 5, 5, 5, 5, 5, 5], 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert split_segments([10, 1], 4) == [[0], [1]]
    groups = split_segments([3, 9, 1, 4, 4, 8, 2, 6, 6], 2)
    assert sum(groups, []) == list(range(9)) and len(groups) == 2
