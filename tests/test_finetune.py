"""Fine-tuning (`model.init_from`, `model.freeze`; mlip.train.finetune): a Cu model trained at 300 K
and fine-tuned on a few 1500 K frames beats the same architecture trained from scratch on those frames
for the same steps; mismatched species/cutoff and unknown freeze names fail with one clear line;
frozen parts do not move; a checkpoint, a run directory and an export start the same model."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch

MODEL = {"family": "deepmd", "rcut": 4.0, "rcut_smth": 2.0, "sel": [50], "neuron": [8, 16], "axis_neuron": 4,
         "fitting_neuron": [24, 24]}


def recipe(out, data, steps, model, lr=0.001, **training):
    from mlip.train.config import load_config

    return load_config(None, {
        "seed": 5, "output": str(out), "data": {"train": [str(data)], "val_fraction": 0.0}, "model": model,
        "loss": {"energy": {"start": 1.0, "limit": 1.0}, "forces": {"start": 100.0, "limit": 1.0}},
        "optimizer": {"lr": {"start": lr, "stop": 1e-4, "decay_steps": max(1, steps // 10)}},
        "training": {"steps": steps, "batch_size": 2, "val_every": 10 ** 6, "checkpoint_every": 10 ** 6,
                     "progress": False, "bias_refit_every": 10, **training},
    })


def train(cfg):
    from mlip.train.trainer import Trainer

    trainer = Trainer(cfg, overwrite=True)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.run()
    return trainer


def cu_frames(n, temperature, seed):
    from mlip.datagen import generate_frames

    return generate_frames(element="Cu", n_frames=n, size=2, temperatures=[temperature], strain=0.03,
                           md_steps=40, seed=seed, vacancies=False)


@pytest.fixture(scope="module")
def cu(tmp_path_factory):
    """EMT Cu: 16 frames at 300 K (a base model trained on them), 4 training and 8 test frames at 1500 K."""
    from mlip.data.extxyz import write_extxyz

    d = tmp_path_factory.mktemp("finetune")
    write_extxyz(cu_frames(16, 300, 1), str(d / "cold.xyz"))
    write_extxyz(cu_frames(4, 1500, 2), str(d / "hot.xyz"))
    train(recipe(d / "base", d / "cold.xyz", 300, dict(MODEL), lr=0.003))
    return {"dir": d, "cold": d / "cold.xyz", "hot": d / "hot.xyz", "base": d / "base",
            "test": cu_frames(8, 1500, 3)}


def errors(model, frames):
    from mlip.graph import build_graphs
    from mlip.train.evaluation import evaluate_graphs

    return evaluate_graphs(model, build_graphs(frames, model.species, model.cutoff, torch.float64))


def test_finetuned_beats_training_from_scratch_at_high_temperature(cu):
    from mlip.train.finetune import load_checkpoint_model

    d, steps = cu["dir"], 100
    train(recipe(d / "ft", cu["hot"], steps, {**MODEL, "init_from": str(cu["base"])}))
    train(recipe(d / "scratch", cu["hot"], steps, dict(MODEL)))
    ft = errors(load_checkpoint_model(str(d / "ft" / "checkpoints" / "last.pt")), cu["test"])
    scratch = errors(load_checkpoint_model(str(d / "scratch" / "checkpoints" / "last.pt")), cu["test"])
    assert ft["force_rmse"] < 0.8 * scratch["force_rmse"], (ft, scratch)
    assert ft["energy_rmse"] < scratch["energy_rmse"], (ft, scratch)


def test_warm_start_copies_weights_and_refits_the_energy_reference(cu):
    """Step 0 of a fine-tuning run is the trained model, except for the per-species reference, which
    is the least-squares fit of the residuals on the new data (mean residual zero for one species)."""
    from mlip.data import read_frames
    from mlip.graph import build_graphs
    from mlip.train.finetune import frame_energies, load_init_model
    from mlip.train.trainer import Trainer

    base = load_init_model(str(cu["base"]))
    trainer = Trainer(recipe(cu["dir"] / "ws", cu["hot"], 10, {"family": "deepmd", "init_from": str(cu["base"])}),
                      overwrite=True)
    model = trainer.model
    assert model.config() == base.config()
    for (name, a), b in zip(base.state_dict().items(), model.state_dict().values()):
        if name != "energy_bias":
            assert torch.equal(a, b), name
    graphs = build_graphs(read_frames(str(cu["hot"])), model.species, model.cutoff, torch.float64)
    res = [g.energy - e for g, e in zip(graphs, frame_energies(model, graphs))]
    old = [g.energy - e for g, e in zip(graphs, frame_energies(base, graphs))]
    assert abs(sum(res)) < 1e-8 and abs(sum(old)) > 0.1
    assert not torch.equal(model.energy_bias, base.energy_bias)


def test_init_from_checkpoint_run_directory_and_export_agree(cu, tmp_path):
    from mlip.export import METADATA_FILE, export_model
    from mlip.train.finetune import EXPORT_METADATA_FILE, load_checkpoint_model, load_init_model

    assert EXPORT_METADATA_FILE == METADATA_FILE
    ckpt = str(cu["base"] / "checkpoints" / "best.pt")
    ref = load_checkpoint_model(ckpt)
    export_model(ref, str(tmp_path / "m32.pt"), dtype="float32")
    export_model(ref, str(tmp_path / "m.pt"))
    for spec in (ckpt, str(cu["base"]), str(tmp_path / "m.pt"), str(tmp_path / "m32.pt")):
        m = load_init_model(spec)
        assert m.config() == ref.config(), spec
        for (name, a), b in zip(ref.state_dict().items(), m.state_dict().values()):
            torch.testing.assert_close(b.to(a.dtype), a, rtol=0, atol=0 if "32" not in spec else 1e-6, msg=name)
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ValueError, match="neither an mlip checkpoint nor a loadable export"):
        load_init_model(str(tmp_path / "junk.pt"))
    with pytest.raises(FileNotFoundError, match="without checkpoints/best.pt"):
        load_init_model(str(tmp_path))


def test_species_and_cutoff_mismatch_give_one_clear_line(cu, tmp_path, capsys):
    import yaml
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from mlip.cli import main
    from mlip.data import Frame
    from mlip.data.extxyz import write_extxyz
    from mlip.train.trainer import Trainer

    base = str(cu["base"])
    cases = [({**MODEL, "init_from": base, "rcut": 4.5}, cu["hot"],
              r"cutoff 4 Å but the recipe's model.rcut is 4.5 Å"),
             ({**MODEL, "init_from": base, "species": ["Ag", "Cu"]}, cu["hot"],
              r"species \['Cu'\] but the recipe's model.species is \['Ag', 'Cu'\]"),
             ({"family": "nequip", "init_from": base}, cu["hot"],
              "is a 'deepmd' model but the recipe's model.family is 'nequip'"),
             ({**MODEL, "init_from": base, "neuron": [8, 32]}, cu["hot"],
              r"has neuron = \[8, 16\] but the recipe's")]
    at = bulk("Cu", "fcc", a=3.6, cubic=True)
    at.symbols[0] = "Ag"
    at.rattle(0.05, seed=1)
    at.calc = EMT()
    write_extxyz([Frame.from_atoms(at)], str(tmp_path / "agcu.xyz"))
    cases.append(({"family": "deepmd", "init_from": base}, tmp_path / "agcu.xyz",
                  r"has species \['Cu'\] but the training data also holds \['Ag'\]"))
    for model, data, msg in cases:
        with pytest.raises(ValueError, match=msg):
            Trainer(recipe(tmp_path / "x", data, 10, model), overwrite=True)
    # through the CLI: exit code 2 and one line naming both values
    cfg = recipe(tmp_path / "cli", cu["hot"], 10, {**MODEL, "init_from": base, "rcut": 4.5})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cutoff 4 Å" in err[0] and "4.5 Å" in err[0]


def test_freeze_keeps_the_named_parts_and_rejects_unknown_names(cu, tmp_path):
    from mlip.train.finetune import load_checkpoint_model, load_init_model
    from mlip.train.trainer import Trainer

    base = load_init_model(str(cu["base"]))
    train(recipe(tmp_path / "frozen", cu["hot"], 20, {"family": "deepmd", "init_from": str(cu["base"]),
                                                      "freeze": ["embedding"]}, checkpoint_every=7))
    tuned = load_checkpoint_model(str(tmp_path / "frozen" / "checkpoints" / "last.pt"), which="model")
    before, after = base.state_dict(), tuned.state_dict()
    emb = [k for k in before if k.startswith("embedding.")]
    assert emb and all(torch.equal(before[k], after[k]) for k in emb)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("fitting."))
    # a resumed run keeps the freeze
    cfg = recipe(tmp_path / "resumed", cu["hot"], 20, {"family": "deepmd", "init_from": str(cu["base"]),
                                                       "freeze": ["embedding", "fitting"]})
    t = Trainer(cfg, overwrite=True)
    with contextlib.redirect_stdout(io.StringIO()):
        t.run(stop_at=5)
    t = Trainer(cfg, resume=True)
    assert not any(p.requires_grad for p in t.model.parameters())
    with pytest.raises(ValueError, match=r"model.freeze \['embedding'\] needs model.init_from"):
        Trainer(recipe(tmp_path / "z", cu["hot"], 10, {**MODEL, "freeze": ["embedding"]}), overwrite=True)
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['embeding'\] for family 'deepmd' "
                                         r"\(valid: \['embedding', 'fitting'\]\)"):
        Trainer(recipe(tmp_path / "y", cu["hot"], 10, {"family": "deepmd", "init_from": str(cu["base"]),
                                                       "freeze": ["embeding"]}), overwrite=True)


def small_model(family):
    from mlip.models import build_model

    cfg = {"deepmd": dict(MODEL, species=["Cu"]),
           "mtp": {"species": ["Cu", "Ag"], "level": 8, "cutoff": 4.0},
           "nequip": {"species": ["Cu"], "cutoff": 4.0, "l_max": 1, "num_features": 4, "num_layers": 1,
                      "radial_hidden": 8, "pair_basis": 3}}[family]
    cfg = dict(cfg)
    cfg.pop("family", None)
    return build_model(family, cfg)


@pytest.mark.parametrize("family", ["deepmd", "mtp", "nequip"])
def test_every_freeze_name_and_energy_reference_exists(family):
    """The per-family tables of mlip.train.finetune name real parameters (a renamed module must fail here)."""
    from mlip.train.finetune import FREEZE_GROUPS, apply_freeze, energy_reference

    for name in FREEZE_GROUPS[family]:
        model = small_model(family)
        frozen = apply_freeze(model, [name])
        assert frozen, (family, name)
        assert all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
        assert any(p.requires_grad for p in model.parameters())
    model = small_model(family)
    bias = torch.arange(1.0, len(model.species) + 1, dtype=torch.float64)
    model.set_energy_bias(bias)
    torch.testing.assert_close(energy_reference(model).double(), bias)


def test_mtp_finetune_freezes_the_radial_part(cu, tmp_path):
    """An MTP fitted with varpro, fine-tuned on the hot frames with `freeze: [radial]` (lbfgs: exact
    linear solve, then L-BFGS on what is left): only the linear coefficients move; freezing those with
    a full-batch optimiser is refused (its exact solve would ignore the freeze)."""
    from mlip.train.finetune import load_checkpoint_model
    from mlip.train.trainer import Trainer

    def mtp(out, data, model, max_iter, name="varpro"):
        from mlip.train.config import load_config

        return load_config(None, {"seed": 1, "output": str(out), "model": model,
                                  "data": {"train": [str(data)], "val_fraction": 0.0},
                                  "loss": {"energy": 1.0, "forces": 0.01, "virial": 0.0},
                                  "optimizer": {"name": name, "max_iter": max_iter},
                                  "training": {"progress": False, "checkpoint_every": 5}})

    arch = {"family": "mtp", "level": 6, "cutoff": 4.0, "radial_basis_size": 6}
    train(mtp(tmp_path / "mtp", cu["cold"], arch, 20))
    base = load_checkpoint_model(str(tmp_path / "mtp" / "checkpoints" / "last.pt"))
    train(mtp(tmp_path / "ft", cu["hot"], {**arch, "init_from": str(tmp_path / "mtp"), "freeze": ["radial"]}, 5,
              name="lbfgs"))
    tuned = load_checkpoint_model(str(tmp_path / "ft" / "checkpoints" / "last.pt"))
    assert torch.equal(tuned.radial_coeffs, base.radial_coeffs)
    assert not torch.equal(tuned.moment_coeffs, base.moment_coeffs)
    assert errors(tuned, cu["test"])["force_rmse"] <= errors(base, cu["test"])["force_rmse"]
    with pytest.raises(ValueError, match=r"optimizer varpro solves \['moment_coeffs'\] exactly"):
        Trainer(mtp(tmp_path / "bad", cu["hot"], {**arch, "init_from": str(tmp_path / "mtp"),
                                                  "freeze": ["moments"]}, 5), overwrite=True)


@pytest.mark.parametrize("family", ["mtp", "nequip"])
def test_export_gives_back_the_model_of_every_family(family, tmp_path):
    """init_from EXPORT.pt rebuilds the eager model from the metadata with the scripted weights."""
    from mlip.export import export_model
    from mlip.train.finetune import load_init_model

    model = small_model(family).double()
    model.set_energy_bias(torch.arange(1.0, len(model.species) + 1, dtype=torch.float64))
    export_model(model, str(tmp_path / "m.pt"))
    back = load_init_model(str(tmp_path / "m.pt"))
    assert back.family == family and back.config() == model.config()
    ref = model.state_dict()
    assert sorted(back.state_dict()) == sorted(ref)
    for name, v in back.state_dict().items():
        assert torch.equal(v, ref[name]), name


def test_cli_finetune_recipe_resolves_init_from_against_its_folder(cu, tmp_path, monkeypatch):
    import os

    import yaml

    from mlip.cli import main

    d = cu["dir"]
    recipe_path = d / "finetune.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "output": str(tmp_path / "run"), "data": {"train": "hot.xyz", "val_fraction": 0.0},
        "model": {"family": "deepmd", "init_from": "base", "freeze": ["embedding"]},
        "optimizer": {"lr": {"start": 0.001, "stop": 1e-4, "decay_steps": 5}},
        "training": {"steps": 5, "progress": False}}))
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    assert main(["train", str(recipe_path)]) == 0
    saved = yaml.safe_load(open(tmp_path / "run" / "config.yaml"))
    assert saved["model"]["init_from"] == os.path.normpath(str(cu["base"]))
    assert (tmp_path / "run" / "model.pt").is_file()


def test_damaged_export_is_not_fine_tuned_from_or_graded(tmp_path):
    """Python loaders of exports check the zip CRCs as the engine does (issue 14, item 1)."""
    from mlip.active.grade import grade_frames
    from mlip.export import export_model
    from mlip.train.finetune import load_export_model
    from tests.conftest import damage_export

    good = str(tmp_path / "m.pt")
    export_model(small_model("deepmd"), good)
    bad = str(tmp_path / "bad.pt")
    entry = damage_export(good, bad)
    load_export_model(good)
    for load in (lambda: load_export_model(bad), lambda: grade_frames(bad, [])):
        with pytest.raises(ValueError, match=f"is damaged: entry '{entry}' fails its CRC check"):
            load()
