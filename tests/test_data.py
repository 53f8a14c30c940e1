"""Tests of the data layer (mlip.data): readers, writers, validation, dataset utilities.

Small inputs are written into tmp_path by the tests themselves; the real reference data in
../shared/data (relative to the repository; override with MLIP_SHARED_DATA) is used when present and
the corresponding tests are skipped with a reason otherwise.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mlip.data import (KBAR_PER_EV_A3, DataError, Frame, apply_type_map, detect_voigt_order,
                       elastic_stress_check, load_dataset, read_cfg, read_deepmd, read_extxyz,
                       read_frames, read_mlearn, set_weights, species_in, split_frames,
                       validate_frames, write_cfg, write_extxyz)

SHARED = Path(os.environ.get("MLIP_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared reference data not available: {p} is absent")
    return p


def make_frame(n=4, seed=0, pbc=(True, True, True), symbols=None, virial=True, energy=True) -> Frame:
    rng = np.random.default_rng(seed)
    cell = np.diag([4.0, 4.5, 5.0]) + 0.1 * rng.standard_normal((3, 3))
    for d in range(3):
        if not pbc[d]:
            cell[d] = 0.0
    w = rng.standard_normal((3, 3))
    return Frame(
        symbols=symbols or (["Si", "O"] * n)[:n],
        positions=rng.uniform(0, 4, (n, 3)),
        cell=cell,
        pbc=np.array(pbc),
        energy=float(rng.standard_normal()) if energy else None,
        forces=rng.standard_normal((n, 3)),
        virial=(w + w.T) if virial else None,
        source="made",
    )


def assert_frames_equal(a: Frame, b: Frame, atol=1e-12):
    assert a.symbols == b.symbols
    np.testing.assert_allclose(a.positions, b.positions, atol=atol)
    np.testing.assert_allclose(a.cell, b.cell, atol=atol)
    assert a.pbc.tolist() == b.pbc.tolist()
    assert (a.energy is None) == (b.energy is None)
    if a.energy is not None:
        assert a.energy == pytest.approx(b.energy, abs=atol)
    for x, y in ((a.forces, b.forces), (a.virial, b.virial)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_allclose(x, y, atol=atol)
    assert a.weight == pytest.approx(b.weight)


# ---------------------------------------------------------------------- Frame and ASE
def test_frame_basics_and_ase_roundtrip():
    fr = make_frame()
    assert fr.n_atoms == 4
    assert fr.volume == pytest.approx(abs(np.linalg.det(fr.cell)))
    atoms = fr.to_atoms()
    # ASE stress = −W/V (Voigt xx yy zz yz xz xy)
    s = atoms.get_stress()
    assert s[0] == pytest.approx(-fr.virial[0, 0] / fr.volume)
    assert s[3] == pytest.approx(-fr.virial[1, 2] / fr.volume)
    assert atoms.get_potential_energy() == pytest.approx(fr.energy)
    back = Frame.from_atoms(atoms)
    assert_frames_equal(fr, back)


def test_from_atoms_virial_sign_against_finite_strain():
    """W = −∂E/∂ε (LAMMPS sign), checked with ASE's EMT on a small Cu cell."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    fr = Frame.from_atoms(atoms)
    h = 1e-5
    for a, b in ((0, 0), (0, 1), (1, 2)):
        e = []
        for sgn in (+1, -1):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = sgn * h / (2 if a != b else 1)
            at = atoms.copy()
            at.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
            at.calc = EMT()
            e.append(at.get_potential_energy())
        de = (e[0] - e[1]) / (2 * h)  # dE/dγ with ε_ab = ε_ba = γ/2 (or ε_aa = γ) = V σ_ab
        assert -fr.virial[a, b] == pytest.approx(de, rel=1e-4, abs=1e-6)


def test_from_atoms_live_calculator_is_evaluated():
    from ase.build import bulk
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EMT()
    atoms.rattle(0.05, seed=3)  # nothing computed yet
    fr = Frame.from_atoms(atoms)
    ref = atoms.copy()
    ref.calc = EMT()
    assert fr.energy == pytest.approx(ref.get_potential_energy())
    np.testing.assert_allclose(fr.forces, ref.get_forces())
    np.testing.assert_allclose(fr.virial, -ref.get_stress(voigt=False) * ref.get_volume())


def test_from_atoms_free_energy_fallback():
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    at = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    at.calc = SinglePointCalculator(at, free_energy=-1.5)
    assert Frame.from_atoms(at).energy == -1.5


# ---------------------------------------------------------------------- extxyz
def test_extxyz_roundtrip(tmp_path):
    frames = [make_frame(4, 0), make_frame(3, 1, pbc=(False, False, False)),
              make_frame(2, 2, virial=False)]
    frames[1].weight = 2.5
    path = tmp_path / "x.extxyz"
    write_extxyz(frames, path)
    back = read_extxyz(path)
    assert len(back) == 3
    for a, b in zip(frames, back):
        assert_frames_equal(a, b, atol=1e-8)
    assert back[1].source == f"{path}:1"
    assert read_frames(path)[0].energy == pytest.approx(frames[0].energy)


def test_extxyz_virial_info_key(tmp_path):
    path = tmp_path / "v.xyz"
    path.write_text(
        "2\n"
        'Lattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy=-3.0 '
        'virial="1 2 3 2 5 6 3 6 9" pbc="T T T"\n'
        "Ar 0 0 0 0.1 0 0\n"
        "Ar 2 2 2 -0.1 0 0\n")
    (fr,) = read_frames(path)
    assert fr.energy == -3.0
    np.testing.assert_allclose(fr.virial, [[1, 2, 3], [2, 5, 6], [3, 6, 9]])
    np.testing.assert_allclose(fr.forces[0], [0.1, 0, 0])


def test_extxyz_malformed(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text("3\nPbc=\"T T T\"\nAr 0 0 0\nAr 1 1\n")
    with pytest.raises(DataError, match="bad.xyz"):
        read_frames(path)


# ---------------------------------------------------------------------- DeePMD
def write_deepmd(root: Path, nframes=(2, 3), n=3, virial=True, nopbc=False, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "type_map.raw").write_text("O\nH\n")
    (root / "type.raw").write_text("\n".join(["0", "1", "1"][:n] + ["1"] * max(0, n - 3)) + "\n")
    if nopbc:
        (root / "nopbc").write_text("")
    data = []
    for k, nf in enumerate(nframes):
        d = root / f"set.{k:03d}"
        d.mkdir()
        arrs = {"coord": rng.uniform(0, 3, (nf, 3 * n)), "energy": rng.standard_normal(nf),
                "force": rng.standard_normal((nf, 3 * n))}
        if not nopbc:
            arrs["box"] = np.tile(np.diag([5.0, 6.0, 7.0]).reshape(1, 9), (nf, 1))
        if virial:
            arrs["virial"] = rng.standard_normal((nf, 9))
        for key, val in arrs.items():
            np.save(d / f"{key}.npy", val)
        data.append(arrs)
    return data


def test_deepmd_reader(tmp_path):
    data = write_deepmd(tmp_path / "sys")
    frames = read_frames(tmp_path / "sys")
    assert len(frames) == 5
    assert frames[0].symbols == ["O", "H", "H"]
    np.testing.assert_allclose(frames[2].positions, data[1]["coord"][0].reshape(3, 3))
    np.testing.assert_allclose(frames[2].forces, data[1]["force"][0].reshape(3, 3))
    np.testing.assert_allclose(frames[4].virial, data[1]["virial"][2].reshape(3, 3))  # no sign change
    assert frames[3].energy == pytest.approx(data[1]["energy"][1])
    np.testing.assert_allclose(frames[0].cell, np.diag([5.0, 6.0, 7.0]))
    assert frames[0].pbc.all()
    assert "set.001:1" in frames[3].source


def test_deepmd_parent_dir_nopbc_and_raw(tmp_path):
    write_deepmd(tmp_path / "all" / "a", nframes=(2,))
    write_deepmd(tmp_path / "all" / "b", nframes=(1,), nopbc=True, virial=False)
    frames = read_frames(tmp_path / "all")
    assert len(frames) == 3
    assert not frames[2].pbc.any() and np.all(frames[2].cell == 0) and frames[2].virial is None
    # the plain-text .raw layout
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "type.raw").write_text("0 0\n")
    (raw / "coord.raw").write_text("0 0 0 1 1 1\n0 0 0 1.1 1 1\n")
    (raw / "box.raw").write_text("4 0 0 0 4 0 0 0 4\n4 0 0 0 4 0 0 0 4\n")
    (raw / "energy.raw").write_text("-1\n-2\n")
    frames = read_deepmd(raw, type_map=["Cu"])
    assert [f.energy for f in frames] == [-1.0, -2.0] and frames[1].symbols == ["Cu", "Cu"]
    with pytest.raises(DataError, match="type_map"):
        read_deepmd(raw)


def test_deepmd_errors(tmp_path):
    write_deepmd(tmp_path / "t")
    f = tmp_path / "t" / "set.001" / "force.npy"
    f.write_bytes(f.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=r"set.001/force.npy.*truncated"):
        read_frames(tmp_path / "t")

    write_deepmd(tmp_path / "s")
    np.save(tmp_path / "s" / "set.000" / "force.npy", np.zeros((2, 6)))
    with pytest.raises(DataError, match=r"force.npy: 6 values per frame, expected 9"):
        read_frames(tmp_path / "s")

    write_deepmd(tmp_path / "n")
    c = np.load(tmp_path / "n" / "set.000" / "coord.npy")
    c[1, 4] = np.nan
    np.save(tmp_path / "n" / "set.000" / "coord.npy", c)
    with pytest.raises(DataError, match=r"set.000:1: atom 1: non-finite position"):
        read_frames(tmp_path / "n")

    write_deepmd(tmp_path / "ty")
    (tmp_path / "ty" / "type.raw").write_text("0\n1\n2\n")
    with pytest.raises(DataError, match=r"atom 2: type 2 has no name"):
        read_frames(tmp_path / "ty")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a DeePMD system"):
        read_frames(tmp_path / "empty")


def test_deepmd_water_real():
    water = shared("water")
    frames = read_frames(water)
    assert len(frames) > 0 and {f.n_atoms for f in frames} == {192}
    assert frames[0].symbols.count("O") == 64 and frames[0].symbols.count("H") == 128
    assert frames[0].forces.shape == (192, 3) and frames[0].virial is None
    assert species_in(frames) == ["H", "O"]
    assert frames[0].volume > 1000


# ---------------------------------------------------------------------- mlearn
def mlearn_record(cell, frac, symbols, energy, forces, stress, group="AIMD-NVT", desc=""):
    cell = np.asarray(cell, dtype=float)
    sites = [{"species": [{"element": s, "occu": 1}], "abc": list(f), "xyz": list(np.asarray(f) @ cell),
              "label": s} for s, f in zip(symbols, frac)]
    return {"structure": {"@module": "pymatgen.core.structure", "@class": "Structure",
                          "lattice": {"matrix": cell.tolist()}, "sites": sites},
            "outputs": {"energy": energy, "forces": np.asarray(forces).tolist(),
                        "virial_stress": list(stress)},
            "group": group, "description": desc, "num_atoms": len(symbols)}


def test_mlearn_reader_conversion(tmp_path):
    cell = np.diag([3.0, 3.0, 3.0])
    rec = mlearn_record(cell, [[0, 0, 0], [0.5, 0.5, 0.5]], ["Mo", "Mo"], -21.7,
                        [[0.1, 0, 0], [-0.1, 0, 0]], [10.0, 20.0, 30.0, 1.0, 2.0, 3.0])
    path = tmp_path / "d.json"
    path.write_text(json.dumps([rec]))
    (fr,) = read_frames(path, voigt_order="xx yy zz xy yz xz")
    v = 27.0 / KBAR_PER_EV_A3
    np.testing.assert_allclose(fr.virial, v * np.array([[10, 1, 3], [1, 20, 2], [3, 2, 30]]))
    np.testing.assert_allclose(fr.positions[1], [1.5, 1.5, 1.5])
    assert fr.energy == -21.7 and fr.info["group"] == "AIMD-NVT"
    # positive (compressive, VASP sign) stress -> positive W -> negative ASE stress
    assert fr.to_atoms().get_stress()[0] < 0
    # without Elastic records "auto" falls back to VASP's order
    (fr2,) = read_frames(path)
    np.testing.assert_allclose(fr2.virial, fr.virial)


def synthetic_elastic(order_names):
    """Strained copies of a cubic cell with a harmonic energy and VASP-sign kbar stresses written in
    the given component order: the energy test must find the order and slope −1."""
    a0, c11, c12, c44 = 3.0, 2.0, 1.0, 0.7  # eV/Å³
    cmat = np.array([[c11, c12, c12, 0, 0, 0], [c12, c11, c12, 0, 0, 0], [c12, c12, c11, 0, 0, 0],
                     [0, 0, 0, c44, 0, 0], [0, 0, 0, 0, c44, 0], [0, 0, 0, 0, 0, c44]])
    idx = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "yz": (1, 2), "xz": (0, 2), "xy": (0, 1)}
    voigt = ["xx", "yy", "zz", "yz", "xz", "xy"]
    recs = []
    for mode, (a, b) in enumerate([(0, 0), (1, 2), (0, 2), (0, 1)]):
        for eps in np.arange(-0.04, 0.041, 0.02):
            e = np.zeros((3, 3))
            e[a, b] = e[b, a] = eps / (1 if a == b else 2)
            ev = np.array([e[0, 0], e[1, 1], e[2, 2], 2 * e[1, 2], 2 * e[0, 2], 2 * e[0, 1]])
            sig_v = cmat @ ev  # physical (ASE-sign) stress, small-strain
            sig = {k: sig_v[i] for i, k in enumerate(voigt)}
            v0 = a0 ** 3
            energy = 0.5 * v0 * ev @ cmat @ ev
            cell = a0 * (np.eye(3) + e)
            stress = [-sig[k] * KBAR_PER_EV_A3 for k in order_names.split()]  # VASP sign, kbar
            recs.append(mlearn_record(cell, [[0, 0, 0]], ["Mo"], energy, [[0, 0, 0]], stress,
                                      group="Elastic", desc=f"mode {mode}, strain {eps:.2f}"))
    return recs


@pytest.mark.parametrize("order", ["xx yy zz xy yz xz", "xx yy zz xy xz yz"])
def test_mlearn_order_and_sign_detection_synthetic(tmp_path, order):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(synthetic_elastic(order)))
    frames = read_mlearn(path)
    assert frames[0].info["mlearn_voigt_order"] == order
    assert detect_voigt_order(frames) == order
    r = elastic_stress_check(frames, order)
    assert r["slope"] == pytest.approx(-1.0, abs=0.02)
    # a sibling file without Elastic records inherits the order
    other = tmp_path / "test.json"
    rec = mlearn_record(np.eye(3) * 3, [[0, 0, 0]], ["Mo"], 0.0, [[0, 0, 0]], [0, 0, 0, 1, 2, 3])
    other.write_text(json.dumps([rec]))
    (fr,) = read_mlearn(other)
    assert fr.info["mlearn_voigt_order"] == order


@pytest.mark.parametrize("element,order", [("Mo", "xx yy zz xy xz yz"), ("Si", "xx yy zz xy yz xz")])
def test_mlearn_stress_sign_real_data(element, order):
    """The mlearn stress convention, model-free, from the Elastic group (see mlip/data/mlearn.py):
    dE = −V s:dε / 1602.18 with s in kbar => W = +V s / 1602.1766208 eV; Mo's shear order is
    xx yy zz xy xz yz, Si's is VASP's xx yy zz xy yz xz."""
    train = read_mlearn(shared(f"mlearn/{element}/training.json"))
    assert train[0].info["mlearn_voigt_order"] == order
    good = elastic_stress_check(train, order)
    assert good["n_pairs"] > 50
    assert good["slope"] == pytest.approx(-1.0, abs=0.02)  # sign −, unit kbar
    assert good["rms_residual"] < 0.05 * good["rms_dE"]
    other = "xx yy zz xy yz xz" if order != "xx yy zz xy yz xz" else "xx yy zz xy xz yz"
    assert elastic_stress_check(train, other)["rms_residual"] > 10 * good["rms_residual"]
    # conversion: W = +V s / 1602.18 (positive VASP stress = compression = positive W)
    fr = next(f for f in train if f.info.get("group") == "Elastic")
    s = fr.info["virial_stress_kbar"]
    assert fr.virial[0, 0] == pytest.approx(fr.volume * s[0] / KBAR_PER_EV_A3)
    test = read_mlearn(shared(f"mlearn/{element}/test.json"))
    assert test[0].info["mlearn_voigt_order"] == order  # from training.json when test.json can't tell
    assert len(test) == {"Mo": 23, "Si": 25}[element]
    assert sum(f.n_atoms for f in test) == {"Mo": 1189, "Si": 1525}[element]


def test_mlearn_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"structure": ')
    with pytest.raises(DataError, match=r"bad.json: malformed JSON at line 1"):
        read_frames(bad)
    rec = mlearn_record(np.eye(3) * 3, [[0, 0, 0], [0.5, 0.5, 0.5]], ["Mo", "Mo"], 0.0,
                        [[0, 0, 0]], [0] * 6)  # one force row for two atoms
    p = tmp_path / "shape.json"
    p.write_text(json.dumps([rec, rec]))
    with pytest.raises(DataError, match=r"shape.json:0: forces have shape \(1, 3\), expected \(2, 3\)"):
        read_frames(p)
    p.write_text(json.dumps([{"outputs": {}}]))
    with pytest.raises(DataError, match=r"shape.json:0: missing structure field"):
        read_frames(p)


# ---------------------------------------------------------------------- MLIP cfg
def test_cfg_roundtrip(tmp_path):
    frames = [make_frame(4, 0), make_frame(3, 1, pbc=(False, False, False)),
              make_frame(2, 2, pbc=(True, True, False), virial=False, energy=False)]
    frames[0].weight = 3.0
    frames[0].info["cfg_features"] = [["EFS_by", "VASP"]]
    path = tmp_path / "x.cfg"
    tm = write_cfg(frames, path)
    assert tm == ["O", "Si"]
    back = read_cfg(path, type_map=tm)
    assert len(back) == 3
    for a, b in zip(frames, back):
        assert_frames_equal(a, b, atol=0)  # repr() numbers: exact
    assert back[0].info["cfg_features"] == [["EFS_by", "VASP"]]
    assert back[1].source == f"{path}:1"
    # untyped read: integer names, rejected by ASE conversion until mapped
    raw = read_frames(path)
    assert raw[0].symbols[:2] == ["1", "0"]
    with pytest.raises(DataError, match="type_map"):
        raw[0].to_atoms()
    with pytest.raises(DataError, match=r"atom 0: species '1' is not in the allowed species"):
        validate_frames(raw, species=["O", "Si"])
    apply_type_map(raw, tm)
    assert raw[0].symbols == frames[0].symbols


def test_cfg_reader_format_details(tmp_path):
    path = tmp_path / "d.cfg"
    path.write_text("""BEGIN_CFG
 Size
    2
 Supercell
    4.0 0.0 0.0
    0.0 4.0 0.0
    0.0 0.0 4.0
 AtomData:  id type direct_x direct_y direct_z fx fy fz nbh_grades
    1 0 0.0 0.0 0.0 0.5 0 0 1.2
    2 1 0.5 0.5 0.5 -0.5 0 0 1.3
 Energy
    -5.5
 PlusStress:  xx yy zz yz xz xy
    1 2 3 4 5 6
 Feature   EFS_by VASP
END_CFG
""")
    (fr,) = read_cfg(path, type_map=["Si", "C"])
    assert fr.symbols == ["Si", "C"]
    np.testing.assert_allclose(fr.positions[1], [2, 2, 2])
    np.testing.assert_allclose(fr.virial, [[1, 6, 5], [6, 2, 4], [5, 4, 3]])  # PlusStress = W
    assert fr.energy == -5.5 and fr.forces[0, 0] == 0.5


def test_cfg_errors(tmp_path):
    good = make_frame(2, 0)
    path = tmp_path / "a.cfg"
    write_cfg([good, good], path)
    text = path.read_text()
    cut = tmp_path / "cut.cfg"
    cut.write_text(text[: text.rindex("END_CFG")])
    with pytest.raises(DataError, match=r"cut.cfg:1: block starting at line \d+ has no END_CFG"):
        read_cfg(cut)
    nested = tmp_path / "nested.cfg"
    nested.write_text(text.replace("END_CFG", "", 1))
    with pytest.raises(DataError, match=r"nested.cfg:0: .*no END_CFG"):
        read_cfg(nested)
    short = tmp_path / "short.cfg"
    short.write_text(text.replace("Size\n    2", "Size\n    3", 1))
    with pytest.raises(DataError, match=r"short.cfg:0 .*atom 2: missing line"):
        read_cfg(short)
    with pytest.raises(DataError, match=r"a.cfg:0: atom 0: type 1 is not in type_map"):
        read_cfg(path, type_map=["O"])
    nan = tmp_path / "nan.cfg"
    lines = text.splitlines()
    k = next(i for i, l in enumerate(lines) if "Energy" in l)
    lines[k + 1] = "    nan"
    nan.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"nan.cfg:0: non-finite energy"):
        read_cfg(nan)


def test_cfg_mtp_reference_real():
    path = shared("mtp_reference/level16_mlip2_efs.cfg")
    frames = read_frames(path)
    assert len(frames) == 1001 and frames[0].n_atoms == 32
    assert frames[0].symbols[0] == "0"
    np.testing.assert_allclose(frames[0].cell, np.eye(3) * 7.22)
    assert frames[0].energy == pytest.approx(-0.179384932714)
    np.testing.assert_allclose(np.diag(frames[0].virial), [-5.04185] * 3)  # PlusStress = W


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("mutate,pattern", [
    (lambda f: setattr(f, "forces", np.zeros((3, 3))), r"made: forces have shape \(3, 3\), expected \(4, 3\)"),
    (lambda f: setattr(f, "positions", np.zeros((5, 3))), r"positions have shape \(5, 3\), expected \(4, 3\)"),
    (lambda f: f.positions.__setitem__((2, 1), np.inf), r"made: atom 2: non-finite position"),
    (lambda f: f.forces.__setitem__((3, 0), np.nan), r"atom 3: non-finite force"),
    (lambda f: setattr(f, "energy", float("nan")), r"non-finite energy"),
    (lambda f: f.virial.__setitem__((0, 0), np.nan), r"non-finite virial"),
    (lambda f: setattr(f, "virial", np.zeros(4)), r"virial has shape"),
    (lambda f: setattr(f, "cell", np.diag([1.0, 1.0, 0.0])), r"cell is singular along the periodic"),
    (lambda f: (setattr(f, "symbols", []), setattr(f, "positions", np.zeros((0, 3)))), r"zero atoms"),
    (lambda f: setattr(f, "weight", -1.0), r"weight must be finite and >= 0"),
])
def test_validation_errors(mutate, pattern):
    fr = make_frame(4)
    mutate(fr)
    with pytest.raises(DataError, match=pattern):
        validate_frames([fr])


def test_validation_species_and_nonperiodic_cell():
    fr = make_frame(4)
    with pytest.raises(DataError, match=r"atom 0: species 'Si' is not in the allowed species \['O'\]"):
        validate_frames([fr], species=["O"])
    validate_frames([fr], species=["O", "Si"])
    # a zero cell is fine along non-periodic directions
    slab = make_frame(4, pbc=(True, True, False))
    assert np.all(slab.cell[2] == 0)
    validate_frames([slab])
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------- dataset utilities
def test_dataset_utilities(tmp_path):
    write_extxyz([make_frame(4, k) for k in range(5)], tmp_path / "a.xyz")
    write_cfg([make_frame(2, 9, symbols=["Si", "Si"])], tmp_path / "b.cfg", type_map=["Si"])
    write_deepmd(tmp_path / "c", nframes=(2,))
    frames = load_dataset([tmp_path / "a.xyz", tmp_path / "b.cfg", tmp_path / "c"], type_map=["Si"])
    assert len(frames) == 8
    assert species_in(frames) == ["H", "O", "Si"]
    with pytest.raises(DataError, match="not in the allowed species"):
        load_dataset([tmp_path / "c"], species=["O"])

    train, val = split_frames(frames, 0.25, seed=3)
    assert len(val) == 2 and len(train) == 6
    assert set(map(id, train)) | set(map(id, val)) == set(map(id, frames))
    train2, val2 = split_frames(frames, 0.25, seed=3)
    assert [id(f) for f in val2] == [id(f) for f in val]
    assert len(split_frames(frames[:3], 0.01)[1]) == 1
    assert split_frames(frames, 0.0)[1] == []

    set_weights(frames, 2.0)
    assert all(f.weight == 2.0 for f in frames)
    set_weights(frames, lambda f: 1.0 / f.n_atoms)
    assert frames[0].weight == pytest.approx(0.25)
    with pytest.raises(ValueError):
        set_weights(frames, [1.0])
    with pytest.raises(DataError, match="no such file"):
        read_frames(tmp_path / "missing.xyz")
