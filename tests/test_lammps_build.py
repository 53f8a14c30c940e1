"""How pair_style mlip is built and linked: the installed plugin must not link libtorch (BLAS
clash with liblammps), and the two routes for users with their own LAMMPS work against the
headers/library of the wheel: the stand-alone CMake build of the plugin (`plugin load`) and the
copy-in of the style's files into a LAMMPS source tree (compiled into an executable)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lammps_util import export_toy, fcc_structure, last_thermo, rel, requires_lammps, write_data  # noqa: E402

from mlip import lammps_support as ls  # noqa: E402

pytestmark = [requires_lammps, pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_SRC = os.path.join(REPO, "lammps_plugin")


def _style_sources() -> list:
    """Stems of MLIP_STYLE_SOURCES in lammps_plugin/CMakeLists.txt: the files of the two styles."""
    text = open(os.path.join(PLUGIN_SRC, "CMakeLists.txt")).read()
    m = re.search(r"set\(MLIP_STYLE_SOURCES\s+([^)]*)\)", text)
    assert m, "no set(MLIP_STYLE_SOURCES ...) in lammps_plugin/CMakeLists.txt"
    return [os.path.splitext(f)[0] for f in m.group(1).split()]


STYLE_SOURCES = _style_sources()

SCRIPT = """
units metal
atom_style atomic
read_data data.lmp
pair_style mlip {model}
pair_coeff * * Cu Ag
thermo_style custom step pe press
thermo_modify format float %.17g
run 0
"""


def _needed(path: str):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return [l.split("[")[1].rstrip("]") for l in out.splitlines() if "(NEEDED)" in l]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("lammps_build")
    model = export_toy(str(d / "eam.pt"), "eam")
    write_data(fcc_structure(3.7, (2, 2, 2), seed=21), str(d / "data.lmp"), ["Cu", "Ag"])
    with open(d / "in.run", "w") as fh:
        fh.write(SCRIPT.format(model=model))
    ref = last_thermo(ls.run_lmp(SCRIPT.format(model=model), str(d)).stdout)["PotEng"]
    return d, ref


def _raw_env():
    """Environment of a plain LAMMPS binary: no entry point, no LAMMPS_PLUGIN_PATH."""
    env = ls.lammps_env()
    env.pop("LAMMPS_PLUGIN_PATH", None)
    env.pop("MLIP_ENGINE_LIBRARY", None)
    return env


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf not available")
def test_installed_plugin_does_not_link_torch():
    needed = _needed(ls.plugin_path())
    assert not any("torch" in n or n.startswith("libc10") for n in needed), needed
    assert "liblammps.so.0" in needed
    assert any("torch" in n for n in _needed(ls.engine_library()))


def _cmake():
    exe = shutil.which("cmake") or os.path.join(os.path.dirname(sys.executable), "cmake")
    if not os.path.exists(exe):
        pytest.skip("cmake not available")
    return exe


def test_standalone_cmake_plugin_with_plugin_load(case, tmp_path):
    """Route for a user's own LAMMPS: configure lammps_plugin/ stand-alone against LAMMPS headers +
    library + find_package(MPI), then `plugin load` it into a plain LAMMPS binary."""
    d, ref = case
    lammps_dir = ls.lammps_python_dir()
    build = tmp_path / "build"
    cfg = [_cmake(), "-S", PLUGIN_SRC, "-B", str(build),
           f"-DLAMMPS_INCLUDE_DIR={lammps_dir}/include/lammps",
           f"-DLAMMPS_LIBRARY={lammps_dir}/liblammps.so.0",
           f"-DMPI_CXX_COMPILER={os.path.join(os.path.dirname(sys.executable), 'mpicxx')}",
           f"-DPython_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja") or os.path.exists(os.path.join(os.path.dirname(sys.executable), "ninja")):
        cfg += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={shutil.which('ninja') or os.path.join(os.path.dirname(sys.executable), 'ninja')}"]
    r = subprocess.run(cfg, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([_cmake(), "--build", str(build), "-j2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    plugin = build / "mlip_plugin.so"
    assert plugin.exists()
    with open(d / "in.load", "w") as fh:
        fh.write(f"plugin load {plugin}\n" + SCRIPT.format(model=d / "eam.pt"))
    binary = os.path.join(lammps_dir, "lmp")
    p = subprocess.run([binary, "-in", "in.load", "-log", "none", "-nocite"], cwd=d, env=_raw_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "Loading plugin: mlip" in p.stdout, p.stdout + p.stderr
    assert rel(last_thermo(p.stdout)["PotEng"], ref) <= 1e-12


def test_copy_into_lammps_source_tree(case, tmp_path):
    """Route for a user's own LAMMPS: install_into_lammps.sh copies the style into src/, where it
    is compiled into LAMMPS (here: into a small executable linked with liblammps, registering the
    style the way LAMMPS' generated style_pair.h does)."""
    d, ref = case
    lammps_dir = ls.lammps_python_dir()
    src = tmp_path / "lammps" / "src"
    src.mkdir(parents=True)
    shutil.copy(os.path.join(lammps_dir, "include", "lammps", "pair.h"), src / "pair.h")
    r = subprocess.run(["bash", os.path.join(PLUGIN_SRC, "install_into_lammps.sh"), str(tmp_path / "lammps")],
                       capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    for name in STYLE_SOURCES:    # the copy-in route gets every file the plugin is built from
        assert (src / f"{name}.cpp").is_file() and (src / f"{name}.h").is_file(), name
    text = (src / "mlip_engine_api.cpp").read_text()
    assert "MLIP_ENGINE_DEFAULT_PATH" in text and ls.engine_library() in text
    assert "PairStyle(mlip,PairMLIP)" in (src / "pair_mlip.h").read_text()
    assert "ComputeStyle(mlip/gamma,ComputeMLIPGamma)" in (src / "compute_mlip_gamma.h").read_text()
    mpi = ls.find_libmpi()
    mpi_dir = os.path.dirname(mpi)
    inc = os.path.join(os.path.dirname(mpi_dir), "include")
    exe = tmp_path / "lmp_custom"
    cmd = [shutil.which("g++") or "c++", "-std=c++17", "-O1", "-DLAMMPS_SMALLBIG", f"-I{src}",
           f"-I{lammps_dir}/include/lammps", f"-I{inc}",
           os.path.join(PLUGIN_SRC, "builtin", "lmp_mlip_builtin.cpp"),
           *(str(src / f"{name}.cpp") for name in STYLE_SOURCES),
           "-o", str(exe), f"{lammps_dir}/liblammps.so.0", mpi, "-ldl",
           f"-Wl,-rpath,{lammps_dir}:{mpi_dir}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    p = subprocess.run([str(exe), "-in", "in.run", "-log", "none", "-nocite"], cwd=d, env=_raw_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Loading plugin" not in p.stdout
    assert rel(last_thermo(p.stdout)["PotEng"], ref) <= 1e-12
