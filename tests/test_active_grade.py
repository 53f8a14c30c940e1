"""Extrapolation grade γ for every family through the export and the C++ engine (issue 5, part 1):
the export's `grade` equals the Python MaxVol reference, γ ≤ 1 + 1e-6 on the active set's own
configurations and grows far from them, the ASE calculator reports it, ghost atoms / n_local work,
and the C ABI (`mlip_engine_has_grade`, `mlip_engine_grade`) gives the same numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def cu_frames(n=4, a=3.61, rattle=0.06, seed=0, size=2):
    from ase.build import bulk

    from mlip.data import Frame

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        at = bulk("Cu", "fcc", a=a * rng.uniform(0.985, 1.015), cubic=True).repeat(size)
        at.rattle(rattle, seed=int(rng.integers(1 << 30)))
        out.append(Frame.from_atoms(at, source=f"train:{k}"))
    return out


def far_atoms(kind):
    from ase.build import bulk

    at = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    if kind == "hot":
        at.rattle(0.35, seed=5)
    elif kind == "strained":
        at.set_cell(at.cell[:] * 1.12, scale_atoms=True)
        at.rattle(0.05, seed=6)
    elif kind == "vacancies":
        for k in (30, 17, 9, 0):
            del at[k]
        at.rattle(0.05, seed=7)
    return at


def make_model(family):
    if family == "deepmd":
        from mlip.models.deepmd import DeepPotSeA

        return DeepPotSeA(["Cu"], rcut=4.0, rcut_smth=2.0, sel=[60], neuron=[8, 16], axis_neuron=4,
                          fitting_neuron=[24, 24], seed=1).double()
    if family == "nequip":
        from mlip.models.nequip import NequIP

        torch.manual_seed(0)
        return NequIP(["Cu"], cutoff=3.6, l_max=1, num_features=8, num_layers=2, head_hidden=8,
                      avg_num_neighbors=12.0).double()
    from mlip.models.mtp import MTP

    m = MTP(["Cu"], level=6, cutoff=4.0, seed=0)
    m.fit_statistics(cu_frames())
    return m.double()


@pytest.fixture(scope="module", params=["deepmd", "nequip", "mtp"])
def graded(request, tmp_path_factory):
    from mlip.active.nn_grade import build_active_set
    from mlip.export import export_model

    model = make_model(request.param)
    frames = cu_frames()
    aset = build_active_set(model, frames)
    path = str(tmp_path_factory.mktemp("grade") / f"{request.param}.pt")
    export_model(model, path, active_set=aset)
    return model, aset, frames, path


def test_export_grade_equals_python_and_bounds(graded):
    from mlip import MLIPCalculator
    from mlip.active.nn_grade import grade_frames
    from mlip.export import read_metadata

    model, aset, frames, path = graded
    meta = read_metadata(path)
    assert meta["has_grade"] and meta["active_set"]["nbh"]["rank"] == aset.rank
    calc = MLIPCalculator(path)
    assert calc.has_grade
    worst = 0.0
    for fr in frames:
        at = fr.to_atoms()
        at.calc = calc
        at.get_potential_energy()
        g = calc.results["atom_gamma"]
        ref = grade_frames(model, [fr], aset)[0]
        np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-7)
        assert calc.results["gamma"] == pytest.approx(g.max())
        worst = max(worst, float(g.max()))
    print(f"{model.family}: max γ on the active set's configurations {worst:.9f}")
    assert worst <= 1.0 + 1e-6
    for kind in ("hot", "strained", "vacancies"):
        at = far_atoms(kind)
        at.calc = calc
        at.get_potential_energy()
        print(f"{model.family}: γ {kind} {calc.results['gamma']:.3g}")
        assert calc.results["gamma"] > 1.05, kind


def test_mtp_export_grade_is_the_mtp_grade(tmp_path):
    """MTP: the export's generic grade and the MTP's own scripted `grade` are one thing."""
    from mlip.active.graph import frame_graph
    from mlip.active.nn_grade import build_active_set
    from mlip.export import export_model

    model = make_model("mtp")
    aset = build_active_set(model, cu_frames())
    path = str(tmp_path / "m.pt")
    export_model(model, path, active_set=aset)
    s = torch.jit.load(path)
    sp, ei, ev = frame_graph(far_atoms("hot"), model.species, model.cutoff)
    np.testing.assert_allclose(s.grade(sp, ei, ev, len(sp)).numpy(), s.model.grade(sp, ei, ev, len(sp)).numpy(),
                               rtol=1e-12)
    # an MTP carrying its own active set is exported with it
    path2 = str(tmp_path / "m2.pt")
    from mlip.models.mtp import MTP

    export_model(MTP.from_export(path), path2)
    s2 = torch.jit.load(path2)
    assert s2.has_grade
    np.testing.assert_allclose(s2.grade(sp, ei, ev, len(sp)).numpy(), s.grade(sp, ei, ev, len(sp)).numpy(), rtol=1e-10)


def test_no_active_set(tmp_path):
    from mlip import MLIPCalculator
    from mlip._core import Engine
    from mlip.export import export_model

    path = str(tmp_path / "plain.pt")
    export_model(make_model("deepmd"), path)
    calc = MLIPCalculator(path)
    at = far_atoms("hot")
    at.calc = calc
    at.get_potential_energy()
    assert "gamma" not in calc.results and "atom_gamma" not in calc.results
    eng = Engine(path, 1)
    assert not eng.has_grade
    with pytest.raises(RuntimeError, match="has no active set"):
        eng.grade(np.zeros(1, dtype=np.int64), np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3)))


def ghost_graph(atoms, cutoff, reach):
    """Locals first, then periodic images within `reach` of a local atom (a LAMMPS-like graph)."""
    from mlip.neighbors import neighbor_list

    pos, cell, n = atoms.get_positions(), atoms.cell[:], len(atoms)
    all_pos, orig = [pos], [np.arange(n)]
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            for c in (-1, 0, 1):
                if (a, b, c) == (0, 0, 0):
                    continue
                p = pos + np.array([a, b, c]) @ cell
                d = np.linalg.norm(p[:, None] - pos[None], axis=-1).min(1)
                keep = d < reach
                all_pos.append(p[keep])
                orig.append(np.arange(n)[keep])
    all_pos, orig = np.concatenate(all_pos), np.concatenate(orig)
    ei, _, vec = neighbor_list(all_pos, np.zeros((3, 3)), [False] * 3, cutoff)
    return orig, ei, vec


@pytest.mark.parametrize("family", ["deepmd", "nequip"])
def test_grade_with_ghost_atoms(family, tmp_path):
    from mlip._core import Engine
    from mlip.active.nn_grade import build_active_set
    from mlip.export import export_model
    from mlip.neighbors import neighbor_list

    model = make_model(family)
    path = str(tmp_path / "m.pt")
    export_model(model, path, active_set=build_active_set(model, cu_frames()))
    eng = Engine(path, 1)
    at = far_atoms("hot")
    n = len(at)
    ei, _, ev = neighbor_list(at.get_positions(), at.cell[:], at.pbc, model.cutoff)
    sp = np.zeros(n, dtype=np.int64)
    g_periodic = eng.grade(sp, ei, ev)
    orig, g_ei, g_ev = ghost_graph(at, model.cutoff, model.interaction_range + 0.3)
    assert len(orig) > 2 * n
    g_ghost = eng.grade(sp[orig], g_ei, g_ev, n)
    assert g_ghost.shape == (n,)
    np.testing.assert_allclose(g_ghost, g_periodic, rtol=1e-9)
    assert eng.grade(sp[orig], g_ei, g_ev, 0).shape == (0,)


C_ABI_GRADE = textwrap.dedent(
    r"""
    import ctypes, json, os, sys
    lib = ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL | os.RTLD_DEEPBIND)
    P, D, I64 = ctypes.c_void_p, ctypes.c_double, ctypes.c_int64
    pd = ctypes.POINTER(ctypes.c_double); pi = ctypes.POINTER(ctypes.c_int64)
    lib.mlip_engine_open.restype = P
    lib.mlip_engine_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.mlip_engine_has_grade.argtypes = [P]
    lib.mlip_engine_close.argtypes = [P]
    lib.mlip_engine_grade.argtypes = [P, I64, I64, pi, I64, pi, pi, pd, pd, ctypes.c_char_p, ctypes.c_int]
    err = ctypes.create_string_buffer(512)
    inp = json.loads(open(sys.argv[2]).read())
    n, e = len(inp["species"]), len(inp["ei"])
    sp = (I64 * n)(*inp["species"]); ei = (I64 * e)(*inp["ei"]); ej = (I64 * e)(*inp["ej"])
    vec = (D * (3 * e))(*inp["vec"])
    res = {"null_has_grade": lib.mlip_engine_has_grade(None)}
    for key, path in (("graded", sys.argv[3]), ("plain", sys.argv[4])):
        h = lib.mlip_engine_open(path.encode(), 1, err, 512)
        assert h, err.value
        g = (D * n)()
        rc = lib.mlip_engine_grade(h, n, n, sp, e, ei, ej, vec, g, err, 512)
        res[key] = [lib.mlip_engine_has_grade(h), rc, list(g), err.value.decode()]
        lib.mlip_engine_close(h)
    print(json.dumps(res))
    """
)


def test_c_abi_grade(graded, tmp_path):
    from mlip import _core
    from mlip.export import export_model
    from mlip.neighbors import neighbor_list

    model, _, _, path = graded
    if model.family != "deepmd":
        pytest.skip("one family is enough for the ABI")
    plain = str(tmp_path / "plain.pt")
    export_model(model, plain)
    at = far_atoms("strained")
    ei, _, ev = neighbor_list(at.get_positions(), at.cell[:], at.pbc, model.cutoff)
    sp = np.zeros(len(at), dtype=np.int64)
    inp = tmp_path / "inp.json"
    inp.write_text(json.dumps(dict(species=sp.tolist(), ei=ei[0].tolist(), ej=ei[1].tolist(), vec=ev.ravel().tolist())))
    script = tmp_path / "cabi.py"
    script.write_text(C_ABI_GRADE)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([sys.executable, str(script), _core.engine_library_path(), str(inp), path, plain],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    ref = _core.Engine(path, 1).grade(sp, ei, ev)
    assert res["null_has_grade"] == 0
    assert res["graded"][0] == 1 and res["graded"][1] == 0
    np.testing.assert_allclose(res["graded"][2], ref, rtol=1e-14)
    assert res["plain"][0] == 0 and res["plain"][1] != 0 and "no active set" in res["plain"][3]
