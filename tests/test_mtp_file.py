"""MLIP-2 `.mtp` files: reproduction of MLIP-2's own numbers, round trips, templates, conversion."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from mlip.graph import frame_edges
from mlip.export import export_model
from mlip.models.base import forces_virials_from_edges
from mlip.io.mtp_file import read_mtp, write_mtp
from mlip.models.mtp_basis import template_dict
from mlip.models.mtp import MTP
from mlip.models.mtp_basis import BasisScheme, level_scheme

from conftest import shared_path

REF = ("mtp_reference", "level16.mtp")
REF_CFG = ("mtp_reference", "level16_mlip2_efs.cfg")


def _efv(model, frame):
    sp, ei, vec = frame_edges(frame, model.species, model.cutoff, model.radial_coeffs.dtype)
    vec.requires_grad_(True)
    e = model(sp, ei, vec).sum()
    (g,) = torch.autograd.grad(e, vec)
    f, ev = forces_virials_from_edges(g, ei, vec.detach(), len(sp))
    return float(e), f.numpy(), ev.sum(0).numpy()


def _frames():
    from mlip.data import read_cfg

    return read_cfg(str(shared_path(*REF_CFG)), type_map=["Cu"])


def test_reproduces_mlip2_on_all_1001_configurations():
    """Energy ≤ 1e-9 eV; forces / PlusStress to the file's print precision (1e-6 eV/Å, 1e-5 eV)."""
    m = MTP.from_mtp_file(str(shared_path(*REF)), species=["Cu"])
    frames = _frames()
    assert len(frames) == 1001
    de = df = dw = 0.0
    for fr in frames:
        e, f, w = _efv(m, fr)
        de = max(de, abs(e - fr.energy))
        df = max(df, float(np.abs(f - fr.forces).max()))
        dw = max(dw, float(np.abs(w - fr.virial).max()))
    assert de <= 1e-9, de
    assert df <= 0.5e-6 + 1e-9, df
    assert dw <= 0.5e-5 + 1e-9, dw


def test_reproduces_mlip2_through_the_export(tmp_path):
    m = MTP.from_mtp_file(str(shared_path(*REF)), species=["Cu"])
    path = str(tmp_path / "l16.pt")
    export_model(m, path, dtype="float64")
    ts = torch.jit.load(path)
    for fr in _frames()[::97]:
        sp, ei, vec = frame_edges(fr, ["Cu"], ts.cutoff)
        ae, f, w, _ = ts(sp, ei, vec, len(sp), False)
        assert abs(float(ae.sum()) - fr.energy) <= 1e-9
        assert np.abs(f.numpy() - fr.forces).max() <= 0.5e-6 + 1e-9
        assert np.abs(w.numpy() - fr.virial).max() <= 0.5e-5 + 1e-9


def test_our_level16_basis_is_mlip2s():
    """Every basis function of MLIP-2's level-16 file equals one of ours (same contraction graph)."""
    d = read_mtp(str(shared_path(*REF)))
    theirs = BasisScheme.from_dict(d)
    ours = level_scheme(16)
    assert len(ours.alpha_moment_mapping) == len(theirs.alpha_moment_mapping) == 92
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(9, 3))
    f = rng.normal(size=(9, 8))

    def evaluate(s):
        r = np.linalg.norm(vecs, axis=1)
        M = np.zeros(s.alpha_moments_count)
        for k, (mu, a, b, c) in enumerate(s.alpha_index_basic):
            M[k] = np.sum(f[:, mu] * vecs[:, 0] ** a * vecs[:, 1] ** b * vecs[:, 2] ** c / r ** (a + b + c))
        for a, b, m, c in s.alpha_index_times:
            M[c] += m * M[a] * M[b]
        return M[s.alpha_moment_mapping]

    x, y = evaluate(theirs), evaluate(ours)
    for v in x:
        assert np.min(np.abs(y - v)) <= 1e-10 * max(1.0, abs(v))
    assert len(set(np.round(y, 8))) == 92


def test_round_trip_is_exact(tmp_path):
    m = MTP.from_mtp_file(str(shared_path(*REF)), species=["Cu"])
    p = str(tmp_path / "rt.mtp")
    m.to_mtp_file(p)
    m2 = MTP.from_mtp_file(p)  # species come back from potential_tag
    assert m2.species == ["Cu"]
    for fr in _frames()[::250]:
        assert _efv(m, fr)[0] == _efv(m2, fr)[0]
    d1, d2 = read_mtp(str(shared_path(*REF))), read_mtp(p)
    for k in ("radial_coeffs", "species_coeffs", "moment_coeffs", "alpha_index_basic", "alpha_index_times",
              "alpha_moment_mapping", "scaling", "min_dist", "max_dist"):
        assert d1[k] == d2[k], k


def test_round_trip_own_model(tmp_path):
    m = MTP(["Mo", "Nb"], level=12, cutoff=4.7, min_dist=1.9, scaling=0.03, seed=2, init_noise=0.3)
    p = str(tmp_path / "own.mtp")
    m.to_mtp_file(p)
    m2 = MTP.from_mtp_file(p)
    from ase.build import bulk

    atoms = bulk("Mo", "bcc", a=3.1, cubic=True).repeat(2)
    atoms.symbols[[1, 5, 6]] = "Nb"
    atoms.rattle(0.1, seed=1)
    assert _efv(m, atoms)[0] == _efv(m2, atoms)[0]
    text = open(p).read()
    assert "potential_tag = species: Mo Nb" in text
    assert m2.config()["basis"] is not None


@pytest.mark.parametrize("level,count", [(6, 5), (8, 9), (16, 92), (20, 288)])
def test_untrained_template(tmp_path, level, count):
    p = str(tmp_path / f"{level:02d}.mtp")
    write_mtp(p, template_dict(level, species_count=2))
    text = open(p).read()
    assert re.search(rf"^alpha_scalar_moments = {count}$", text, re.M)
    assert "radial_coeffs" not in text and "moment_coeffs" not in text
    m = MTP.from_mtp_file(p, species=["Mo", "Nb"], seed=3)
    assert m.n_alpha == count and m.n_species == 2
    assert m.radial_coeffs.shape == (2, 2, level_scheme(level).radial_funcs_count, 8)


def test_template_needs_species(tmp_path):
    p = str(tmp_path / "t.mtp")
    write_mtp(p, template_dict(8, species_count=2))
    with pytest.raises(ValueError, match="species"):
        MTP.from_mtp_file(p)
    with pytest.raises(ValueError, match="species_count = 2"):
        MTP.from_mtp_file(p, species=["Mo"])


def test_mlip2_style_template_text(tmp_path):
    """A hand-written MLIP-2 template (as shipped: no scaling, no coefficients) is read."""
    s = level_scheme(6)
    text = "\n".join([
        "MTP", "version = 1.1.0", "potential_name = MTP1m", "species_count = 1", "potential_tag = ",
        "radial_basis_type = RBChebyshev", "\tmin_dist = 2", "\tmax_dist = 5", "\tradial_basis_size = 8",
        "\tradial_funcs_count = 2", f"alpha_moments_count = {s.alpha_moments_count}",
        f"alpha_index_basic_count = {len(s.alpha_index_basic)}",
        "alpha_index_basic = {" + ", ".join("{%d, %d, %d, %d}" % tuple(x) for x in s.alpha_index_basic) + "}",
        f"alpha_index_times_count = {len(s.alpha_index_times)}",
        "alpha_index_times = {" + ", ".join("{%d, %d, %d, %d}" % tuple(x) for x in s.alpha_index_times) + "}",
        "alpha_scalar_moments = 5",
        "alpha_moment_mapping = {" + ", ".join(str(x) for x in s.alpha_moment_mapping) + "}", ""])
    p = tmp_path / "06.mtp"
    p.write_text(text)
    m = MTP.from_mtp_file(str(p), species=["Si"])
    assert m.n_alpha == 5 and m.cutoff == 5.0 and float(m.rb_min) == 2.0
    assert m.config()["scaling"] is None  # chosen by fit_statistics before training


def test_bad_files(tmp_path):
    p = tmp_path / "bad.mtp"
    p.write_text("MTP\nversion = 2.0.0\n")
    with pytest.raises(ValueError, match="version"):
        read_mtp(str(p))
    p.write_text("NOTMTP\n")
    with pytest.raises(ValueError, match="line 1"):
        read_mtp(str(p))
    with pytest.raises(FileNotFoundError):
        read_mtp(str(tmp_path / "missing.mtp"))
