"""Extrapolation grade γ for every family through one mechanism (`mlip.active.grade`), the export and
the C++ engine: the export's `grade` equals the Python MaxVol reference in both modes (nbh, cfg),
γ ≤ 1 + 1e-6 on the active set's own configurations and grows far from them, the ASE calculator
reports it, ghost atoms / n_local work, `mlip select` builds, grades and selects for each family
(export or run directory), and the C ABI (`mlip_engine_has_grade`, `mlip_engine_grade`) gives the
same numbers."""
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
    from mlip.active.grade import build_active_set, export_graded

    model = make_model(request.param)
    frames = cu_frames()
    aset = build_active_set(model, frames)
    path = str(tmp_path_factory.mktemp("grade") / f"{request.param}.pt")
    export_graded(model, path, aset)
    return model, aset, frames, path


def test_export_grade_equals_python_and_bounds(graded):
    from mlip import MLIPCalculator
    from mlip.active.grade import grade_frames
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


def test_export_grade_equals_python_for_every_family(graded):
    """The export's scripted `grade` (what the engine runs) equals the Python reference far from the
    training set too, and the active set read back from the export grades the same."""
    from mlip.active.grade import grade_frames, read_active_set
    from mlip.data import Frame

    model, aset, frames, path = graded
    far = [Frame.from_atoms(far_atoms(k)) for k in ("hot", "strained", "vacancies")]
    ref = grade_frames(model, far, aset)
    np.testing.assert_allclose(np.concatenate(grade_frames(path, far)), np.concatenate(ref), rtol=1e-9)
    back = read_active_set(path)
    assert back.mode == "nbh" and back.rank == aset.rank
    np.testing.assert_allclose(np.concatenate(grade_frames(model, far, back)), np.concatenate(ref), rtol=1e-9)


@pytest.mark.parametrize("family", ["deepmd", "nequip", "mtp"])
def test_cfg_grade_in_export(family, tmp_path):
    """cfg mode: one row per configuration (Σ of the atoms' rows); the export's `grade` gives every
    atom the configuration's γ, equal to the Python reference; training configurations γ ≤ 1."""
    from mlip import MLIPCalculator
    from mlip.active.grade import build_active_set, export_graded, grade_frames
    from mlip.data import Frame
    from mlip.export import read_metadata

    model = make_model(family)
    frames = cu_frames(n=40, rattle=0.1)
    aset = build_active_set(model, frames, "cfg")
    assert aset.mode == "cfg"
    path = str(tmp_path / "cfg.pt")
    export_graded(model, path, aset)
    assert set(read_metadata(path)["active_set"]) == {"cfg"}
    assert max(float(g.max()) for g in grade_frames(path, frames)) <= 1.0 + 1e-6
    hot = Frame.from_atoms(far_atoms("hot"))
    (ref,) = grade_frames(model, [hot], aset)
    (g,) = grade_frames(path, [hot])
    assert ref.shape == g.shape == (1,)
    np.testing.assert_allclose(g, ref, rtol=1e-9)
    at = far_atoms("hot")
    at.calc = MLIPCalculator(path)
    at.get_potential_energy()
    np.testing.assert_allclose(at.calc.results["atom_gamma"], np.full(len(at), ref[0]), rtol=1e-9)


def test_export_rejects_a_grade_matrix_of_the_wrong_width(tmp_path):
    from mlip.export import export_model

    model = make_model("mtp")
    with pytest.raises(ValueError, match=r"grade matrix must be \[\d+, r > 0\]"):
        export_model(model, str(tmp_path / "x.pt"), grade_matrix=np.ones((3, 2)))
    with pytest.raises(ValueError, match="grade mode"):
        export_model(model, str(tmp_path / "x.pt"), grade_matrix=np.ones((3, 2)), grade_mode="atoms")


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
    from mlip.active.grade import build_active_set, export_graded
    from mlip.neighbors import neighbor_list

    model = make_model(family)
    path = str(tmp_path / "m.pt")
    export_graded(model, path, build_active_set(model, cu_frames()))
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


@pytest.mark.parametrize("family", ["deepmd", "mtp", "nequip"])
def test_cli_select_every_family(family, tmp_path):
    """`mlip select` builds an active set into an export, then grades and selects candidates from
    it, for each family; the new export's γ (C++ engine) equals the Python reference."""
    from ase.build import bulk

    from mlip import MLIPCalculator
    from mlip.active.grade import grade_frames, read_active_set
    from mlip.cli import main
    from mlip.data import Frame, read_frames, write_extxyz
    from mlip.export import export_model, read_metadata

    frames = cu_frames(6)
    model = make_model(family)
    plain = str(tmp_path / "m.pt")
    export_model(model, plain)
    train = str(tmp_path / "train.xyz")
    write_extxyz(frames, train)
    al = str(tmp_path / "al.pt")
    assert main(["select", plain, "--candidates", train]) == 2  # no active set yet: one clear line
    assert main(["select", plain, "--train", train, "-u", al]) == 0
    assert read_metadata(al)["family"] == family and set(read_metadata(al)["active_set"]) == {"nbh"}
    cands = []
    for k, s in enumerate([1.0, 1.0, 1.12, 0.9]):
        a = bulk("Cu", "fcc", a=3.61 * s, cubic=True).repeat(2)
        a.rattle(0.05 if k < 2 else 0.2, seed=50 + k)
        cands.append(Frame.from_atoms(a))
    cand = str(tmp_path / "cand.xyz")
    write_extxyz(cands, cand)
    out, al2, grades = str(tmp_path / "sel.xyz"), str(tmp_path / "al2.pt"), str(tmp_path / "g.txt")
    assert main(["select", al, "--candidates", cand, "--threshold", "1.5", "--max", "2", "-o", out,
                 "-u", al2, "--grades", grades]) == 0
    assert 1 <= len(read_frames(out)) <= 2
    per_cfg = np.loadtxt(grades)[:, 1]
    ref = [float(g.max()) for g in grade_frames(al, cands)]
    np.testing.assert_allclose(per_cfg, ref, rtol=1e-6)
    assert max(ref) > 1.5
    # the updated export: the worst candidate was selected, swaps stopped below the threshold, and
    # the engine reports the new γ
    worst = cands[int(np.argmax(ref))]
    assert any(np.allclose(f.positions, worst.positions) for f in read_frames(out))
    assert read_active_set(al2).log_volume > read_active_set(al).log_volume
    at = worst.to_atoms()
    at.calc = MLIPCalculator(al2)
    at.get_potential_energy()
    assert at.calc.results["gamma"] <= 1.5 + 1e-6 < max(ref)
    assert main(["select", al, "--mode", "cfg", "--candidates", cand]) == 2  # nbh set, cfg asked


def test_cli_select_run_directory(tmp_path):
    """A run directory: the checkpoint's model, graded like its export."""
    from mlip.active.grade import build_active_set, grade_frames
    from mlip.cli import main
    from mlip.data import write_extxyz

    frames = cu_frames(6)
    m = make_model("mtp")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"family": "mtp", "model_config": m.config(), "model": m.state_dict(), "eval_model": None},
               run / "checkpoints" / "best.pt")
    train = str(tmp_path / "train.xyz")
    write_extxyz(frames, train)
    al = str(tmp_path / "al.pt")
    assert main(["select", str(run), "--train", train, "--mode", "cfg", "-u", al]) == 0
    ref = grade_frames(m.double(), frames, build_active_set(m.double(), frames, "cfg"))
    np.testing.assert_allclose(np.concatenate(grade_frames(al, frames)), np.concatenate(ref), rtol=1e-6)
    assert main(["select", str(tmp_path), "--train", train, "-u", al]) == 2  # not a run directory


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
