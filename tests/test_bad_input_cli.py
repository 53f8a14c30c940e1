"""Bad input and faults (issue 14, the CLI / training / data / output-file cases): every case is one
clear line naming the problem (key, value, file, frame, line), a non-zero exit code, never a
traceback, and nothing already written is lost or left half-written by a failed write."""
from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from mlip.cli import main

TINY_MODEL = {"family": "deepmd", "rcut": 4.0, "rcut_smth": 0.5, "sel": [20], "neuron": [4, 8],
              "axis_neuron": 2, "fitting_neuron": [8], "seed": 1}


def tiny_recipe(out, steps=4, **training):
    return {"seed": 3, "output": str(out), "data": {"generate": {"n_frames": 6, "size": 1, "md_steps": 2}},
            "model": dict(TINY_MODEL),
            "training": {"steps": steps, "val_every": 2, "log_every": 1, "checkpoint_every": 2,
                         "progress": False, **training}}


def write_recipe(tmp_path, recipe, name="r.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(recipe))
    return str(p)


def one_error_line(capsys, verb):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"mlip {verb}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0][len(f"mlip {verb}: error: "):]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny `mlip train` run directory (checkpoints, metrics.csv, model.pt)."""
    tmp = tmp_path_factory.mktemp("run")
    assert main(["train", write_recipe(tmp, tiny_recipe(tmp / "run"))]) == 0
    return tmp / "run"


# ------------------------------------------------------------------ items 4, 5, 10: recipe values and keys
@pytest.mark.parametrize("setting, message", [
    ("training.steps=-5", "training.steps: must be a positive integer, got -5"),
    ("training.batch_size=0", "training.batch_size: must be a positive integer, got 0"),
    ("training.steps=abc", "training.steps: must be a positive integer, got 'abc'"),
    ("training.steps=2.5", "training.steps: must be a positive integer, got 2.5"),
    ("training.val_every=0", "training.val_every: must be a positive integer, got 0"),
    ("training.max_time=-1", "training.max_time: must be a positive number or null, got -1"),
    ("data.val_fraction=1.5", "data.val_fraction: must be a number in [0, 1), got 1.5"),
    ("data.format=foo", "data.format: must be one of deepmd, mlearn, cfg, extxyz, ase or null, got 'foo'"),
    ("training.progress=maybe", "training.progress: must be true or false, got 'maybe'"),
    ("optimizer.lr.start=-1", "optimizer.lr.start: must be a positive number, got -1"),
    ("optimizer.lr.strat=0.1", "optimizer.lr.strat: unknown key (did you mean start?)"),
    ("optimizer.ema=1", "optimizer.ema: must be a number in [0, 1) or null, got 1"),
    ("seed=-1", "seed: must be a non-negative integer, got -1"),
    ("threads=0", "threads: must be a positive integer or null, got 0"),
    ("loss.forces.lmit=1", "loss.forces.lmit: unknown key (did you mean limit?)"),
    ("loss.energy=abc", "loss.energy: must be a non-negative number, got 'abc'"),
    ("model.rcutt=4.5", "model.rcutt: unknown key for family deepmd (did you mean rcut?)"),
    ("model.neuron=[4, x]", "model.neuron: must be a list of integers, got [4, 'x']"),
    ("model.rcut=.nan", "model.rcut: must be a finite number, got nan"),
    ("model.family=mtp", "model.axis_neuron: unknown key for family mtp (known: basis, cutoff,"),
    ("model=5", "model: must be a mapping, got 5"),
    ("data.generate.n_framez=3", "data.generate.n_framez: unknown key (did you mean n_frames?)"),
    ("training.stepz=3", "training.stepz: unknown configuration key (did you mean steps?)"),
    ("loss.huber.force=0.1", "loss.huber.force: unknown key (did you mean forces?)"),
    ("loss.huber.forces=0", "loss.huber.forces: must be a positive number, got 0"),
    ("loss.huber=0.1", "loss.huber: must be a mapping of loss terms to δ, e.g. {forces: 0.05}, got 0.1"),
])
def test_bad_recipe_value_is_one_line_and_nothing_is_trained(tmp_path, capsys, setting, message):
    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path / "run"))
    assert main(["train", recipe, "--set", setting]) == 2
    assert one_error_line(capsys, "train").startswith(message)
    assert not (tmp_path / "run").exists()


def test_bad_value_in_the_recipe_file_itself(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "run", steps=-5)
    recipe["model"]["rcutt"] = 4.5
    recipe["model"].pop("rcut")
    assert main(["train", write_recipe(tmp_path, recipe)]) == 2
    assert one_error_line(capsys, "train") == "training.steps: must be a positive integer, got -5"
    recipe["training"]["steps"] = 4
    assert main(["train", write_recipe(tmp_path, recipe)]) == 2
    assert one_error_line(capsys, "train") == "model.rcutt: unknown key for family deepmd (did you mean rcut?)"


def test_set_changes_one_key_of_the_model_section(tmp_path):
    from mlip.train.config import load_config, parse_settings

    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path / "run"))
    cfg = load_config(recipe, settings=parse_settings(["model.rcut=4.5", "model.family=deepmd",
                                                       "data.generate.n_frames=3", "loss.energy.start=0.5",
                                                       "optimizer.lr.start=1e-2"]))
    assert cfg["model"] == {**TINY_MODEL, "rcut": 4.5}
    assert cfg["data"]["generate"] == {"n_frames": 3, "size": 1, "md_steps": 2}
    assert cfg["loss"]["energy"] == {"start": 0.5, "limit": 1.0}  # the default limit is kept
    assert cfg["optimizer"]["lr"]["start"] == 0.01 and cfg["optimizer"]["lr"]["decay_steps"] == 5000


def test_set_replaces_or_patches_a_loss_schedule(tmp_path):
    """Every loss term is a number or {start, limit}: `--set` may give either, whatever the recipe has."""
    from mlip.train.config import load_config, parse_settings

    recipe = tiny_recipe(tmp_path / "run")
    recipe["loss"] = {"virial": {"start": 0.1, "limit": 0.5}, "forces": 3.0}
    path = write_recipe(tmp_path, recipe)
    cfg = load_config(path, settings=parse_settings(["loss.virial=0", "loss.forces={start: 10, limit: 1}"]))
    assert cfg["loss"]["virial"] == 0.0 and cfg["loss"]["forces"] == {"start": 10, "limit": 1}
    cfg = load_config(path, settings=parse_settings(["loss.virial.limit=0.2"]))
    assert cfg["loss"]["virial"] == {"start": 0.1, "limit": 0.2}


def test_huber_is_patched_key_by_key_and_refused_with_a_full_batch_optimiser(tmp_path, capsys):
    from mlip.train.config import load_config, parse_settings

    recipe = tiny_recipe(tmp_path / "run")
    recipe["loss"] = {"huber": {"forces": 0.05}}
    path = write_recipe(tmp_path, recipe)
    cfg = load_config(path, settings=parse_settings(["loss.huber.energy=0.002"]))
    assert cfg["loss"]["huber"] == {"forces": 0.05, "energy": 0.002}
    assert main(["train", path, "--set", "loss.huber.energy=0.002", "--quiet"]) == 0  # the trainer takes it
    assert (tmp_path / "run" / "model.pt").is_file()
    shutil.rmtree(tmp_path / "run")
    assert main(["train", path, "--set", "optimizer.name=lbfgs"]) == 2
    assert one_error_line(capsys, "train") == ("loss.huber: only with the mini-batch optimiser (adam); "
                                               "optimizer.name lbfgs fits squared errors")
    assert not (tmp_path / "run").exists()


def test_al_set_changes_one_key_of_the_train_recipe(tmp_path, capsys):
    from mlip.active.config import load_al_config
    from mlip.train.config import parse_settings

    al = {"output": str(tmp_path / "al"), "init": {"generate": {"n_frames": 4, "size": 1}},
          "train": {"model": dict(TINY_MODEL), "training": {"steps": 3}}}
    path = write_recipe(tmp_path, al, "al.yaml")
    cfg = load_al_config(path, settings=parse_settings(["train.model.rcut=4.5", "select.max_labels=3"]))
    assert cfg["train"]["model"] == {**TINY_MODEL, "rcut": 4.5}
    assert cfg["train"]["training"] == {"steps": 3} and cfg["select"]["max_labels"] == 3
    assert main(["al", path, "--set", "train.training.steps=-5"]) == 2
    assert one_error_line(capsys, "al") == "train.training.steps: must be a positive integer, got -5"
    assert main(["al", path, "--set", "explore.timestep=0"]) == 2
    assert one_error_line(capsys, "al") == "explore.timestep: must be a positive number, got 0"


@pytest.mark.parametrize("argv, message", [
    (["select", "m.pt", "--threads", "0"], "argument --threads: must be a positive integer, got '0'"),
    (["select", "m.pt", "--max", "-2"], "argument --max: must be a positive integer, got '-2'"),
    (["convert", "--template", "8", "--max-dist", "nan", "-o", "x.mtp"],
     "argument --max-dist: must be a positive number, got 'nan'"),
    (["al", "c.yaml", "--iterations", "-1"], "argument --iterations: must be a positive integer, got '-1'"),
])
def test_bad_cli_numbers(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_mtp_level_is_bounded(tmp_path):
    """Level 99 used to enumerate basis functions for ever; a subprocess, so that a regression fails
    by its timeout instead of hanging the suite."""
    proc = subprocess.run([sys.executable, "-m", "mlip", "convert", "--template", "99", "-o", str(tmp_path / "x.mtp")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("argument --template: must be an integer in [2, 28], got '99'")
    from mlip.models.mtp import MTP

    with pytest.raises(ValueError, match="MTP level must be in 2..28"):
        MTP(["Cu"], level=40)


# ------------------------------------------------------------------ items 6, 11: damaged extxyz
GOOD_XYZ = """2
Lattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 pbc="T T T"
Cu 0 0 0 0.1 0.2 0.3
Cu 1.5 1.5 1.5 -0.1 -0.2 -0.3
2
Lattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.4 pbc="T T T"
Cu 0 0 0.1 0.1 0.2 0.3
Cu 1.5 1.5 1.5 -0.1 -0.2 -0.3
"""


def _damaged(tmp_path, line_no, new):
    lines = GOOD_XYZ.splitlines()
    lines[line_no - 1] = new
    p = tmp_path / "d.xyz"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


@pytest.mark.parametrize("line_no, new, message", [
    (6, "this is garbage @@", "frame 1 (line 6): the comment line declares no Properties=, yet atom 0 (line 7) "
                              "has 7 columns: is the comment line damaged?"),
    (7, "Cu 0 0 0.1 0.1 0.2", "frame 1, atom 0 (line 7): 6 columns, but the frame's "
                              "Properties=species:S:1:pos:R:3:forces:R:3 means 7"),
    (4, "Cu 1.5 1.5 1.5 -0.1 x -0.3", "frame 0, atom 1 (line 4): 'x' is not a number"),
    (5, "two", "frame 1 (line 5): expected the number of atoms, got 'two'"),
    (2, 'Lattice="3 0 0" Properties=species:S:1:pos:R:3:forces:R:3',
     "frame 0 (line 2): the comment line cannot be read as extended-XYZ key=value pairs"),
])
def test_damaged_extxyz_names_file_frame_and_line(tmp_path, line_no, new, message):
    from mlip.data import DataError, read_frames

    path = _damaged(tmp_path, line_no, new)
    with pytest.raises(DataError) as exc:
        read_frames(path)
    assert str(exc.value).startswith(f"{path}, {message}")


def test_garbage_comment_without_extra_columns_is_refused(tmp_path):
    from mlip.data import DataError, read_frames

    p = tmp_path / "g.xyz"
    p.write_text('1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 energy=-1 pbc="T T T"\n'
                 "Cu 0 0 0\n1\ngarbage here\nCu 0 0 0\n")
    with pytest.raises(DataError, match=r"frame 1 \(line 5\): the comment line declares no Properties= \(other "
                                        r"frames do\): its cell, pbc and labels would be lost"):
        read_frames(str(p))
    p.write_text("1\nplain xyz comment\nCu 0 0 0\n")  # a plain XYZ file stays readable
    assert len(read_frames(str(p))) == 1


def test_train_on_damaged_extxyz_is_one_line(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path / "run")
    recipe["data"] = {"train": _damaged(tmp_path, 6, "garbage")}
    assert main(["train", write_recipe(tmp_path, recipe)]) == 2
    assert "d.xyz, frame 1 (line 6): the comment line declares no Properties=" in one_error_line(capsys, "train")


# ------------------------------------------------------------------ items 7, 13: failed writes
def test_atomic_write_failure_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    from mlip.io import safe_write

    target = tmp_path / "model.pt"
    target.write_bytes(b"previous good model")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safe_write.os, "fsync", full)
    with pytest.raises(safe_write.WriteError) as exc:
        safe_write.atomic_write(str(target), b"new model" * 1000)
    assert str(exc.value) == f"cannot write {target}: No space left on device"
    assert isinstance(exc.value, ValueError)  # printed by the CLI as one line
    assert target.read_bytes() == b"previous good model"
    assert os.listdir(tmp_path) == ["model.pt"]


def device(tmp_path, name):
    """/dev/<name>, or as root a private copy of that device node in tmp_path: a writer that wrongly
    replaced the file (the rename of a temporary over it) must not destroy the system's node."""
    import stat

    dev = f"/dev/{name}"
    if not os.path.exists(dev):
        pytest.skip(f"{dev} does not exist here")
    if os.geteuid() != 0:
        return dev  # without root nothing can replace it
    node = tmp_path / name
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.stat(dev).st_rdev)
    except OSError as exc:
        pytest.skip(f"cannot make a private {dev} node: {exc}")
    return str(node)


def test_atomic_write_never_replaces_a_device(tmp_path):
    from mlip.io.safe_write import WriteError, atomic_write

    null, full = device(tmp_path, "null"), device(tmp_path, "full")
    atomic_write(null, b"discarded")
    assert os.path.exists(null) and not os.path.isfile(null)
    with pytest.raises(WriteError, match=f"cannot write {full}: No space left on device"):
        atomic_write(full, b"x" * 100000)
    assert not os.path.isfile(full)


def _limited(limit):
    def setup():  # a "full disk": writes beyond `limit` bytes fail with EFBIG instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return setup


def _mlip(args, limit=None):
    return subprocess.run([sys.executable, "-m", "mlip", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(limit) if limit else None)


def _one_line(proc, verb):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"mlip {verb}: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0][len(f"mlip {verb}: error: "):]


def test_export_onto_a_full_file_system(trained_run, tmp_path):
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous good model")
    proc = _mlip(["export", str(trained_run), "-o", str(out)], limit=20000)
    assert _one_line(proc, "export") == f"cannot write {out}: File too large"
    assert out.read_bytes() == b"previous good model"
    assert os.listdir(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("where, message", [
    ("/proc/model.pt", "cannot write /proc/model.pt: cannot create a file in /proc:"),
    ("{tmp}/missing/model.pt", "cannot write {tmp}/missing/model.pt: directory {tmp}/missing does not exist"),
    ("{tmp}", "cannot write {tmp}: it is a directory"),
    ("{full}", "cannot write {full}: No space left on device"),
])
def test_export_to_unwritable_places(trained_run, tmp_path, capsys, where, message):
    if where.startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    full = device(tmp_path, "full") if "{full}" in where else ""
    where, message = where.format(tmp=tmp_path, full=full), message.format(tmp=tmp_path, full=full)
    assert main(["export", str(trained_run), "-o", where]) == 2
    assert one_error_line(capsys, "export").startswith(message)


def test_export_into_a_read_only_directory(trained_run, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: a 0o555 directory does not stop writes (the /proc case covers it)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["export", str(trained_run), "-o", str(ro / "m.pt")]) == 2
        assert one_error_line(capsys, "export").endswith("Permission denied")
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


def test_train_into_unwritable_places(tmp_path, capsys):
    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path / "run"))
    assert main(["train", recipe, "-o", "/proc/mlip_run"]) == 2
    assert one_error_line(capsys, "train") == ("cannot create directory /proc/mlip_run/checkpoints: "
                                               "No such file or directory")
    (tmp_path / "file").write_text("x")
    assert main(["train", recipe, "-o", str(tmp_path / "file")]) == 2
    assert one_error_line(capsys, "train") == (f"cannot create directory {tmp_path}/file/checkpoints: "
                                               f"{tmp_path}/file is a file, not a directory")


def test_train_onto_a_full_file_system(tmp_path):
    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path / "run"))
    proc = _mlip(["train", recipe], limit=20000)  # config.yaml fits, a checkpoint does not
    msg = _one_line(proc, "train")
    assert msg.startswith(f"cannot write {tmp_path}/run/checkpoints/") and msg.endswith(".pt: File too large")
    leftovers = [f for d, _, fs in os.walk(tmp_path / "run") for f in fs if f not in ("config.yaml", "metrics.csv")]
    assert leftovers == []


# ------------------------------------------------------------------ item 12: a damaged last.pt
def test_resume_from_a_truncated_checkpoint(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    recipe = write_recipe(tmp_path, tiny_recipe(run, steps=6))
    last = run / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    assert main(["train", recipe, "--resume"]) == 0  # falls back to best.pt, saying so
    err = capsys.readouterr().err
    assert (f"warning: '{last}' is not a readable mlip checkpoint: not a complete zip archive "
            f"({len(data) // 2} bytes; truncated or damaged?); resuming from '{run}/checkpoints/best.pt'") in err
    for name in ("last.pt", "best.pt"):
        (run / "checkpoints" / name).write_bytes(data[:1000])
    assert main(["train", recipe, "--resume"]) == 2
    assert one_error_line(capsys, "train") == (
        f"--resume: '{last}' is not a readable mlip checkpoint: not a complete zip archive (1000 bytes; "
        f"truncated or damaged?); no other good checkpoint in '{run}/checkpoints'")


# ------------------------------------------------------------------ item 17: metrics.csv after a kill
def _rows(path):
    import csv

    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(fh)]


def test_killed_and_resumed_run_writes_every_metrics_row_once(tmp_path):
    from mlip.train.config import load_config
    from mlip.train.trainer import Trainer

    ref = Trainer(load_config(None, tiny_recipe(tmp_path / "ref", steps=7, checkpoint_every=3)))
    ref.run()
    cfg = load_config(None, tiny_recipe(tmp_path / "run", steps=7, checkpoint_every=3))
    t = Trainer(cfg)
    saved = {}

    def keep(name, path):  # the last.pt a SIGKILL at step 5 leaves behind: the one of step 3
        if name == "last.pt" and t.step == 3:
            saved["state"] = open(path, "rb").read()

    t.on_checkpoint.append(keep)
    t.run(stop_at=5)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(saved["state"])
    with open(tmp_path / "run" / "metrics.csv", "a") as fh:
        fh.write("6,1.2,1e-3,0.5")  # a row cut short by the kill
    Trainer(cfg, resume=True).run()
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 8))
    assert rows == _rows(tmp_path / "ref" / "metrics.csv")
