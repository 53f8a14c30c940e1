"""Starting a training run from a trained model: fine-tuning, and the active-learning retrain.

    model: {family: deepmd, init_from: runs/cu_300K, freeze: [embedding]}

`init_from` is a run directory of `mlip train` (its `checkpoints/best.pt`, the model that
`RUN/model.pt` was exported from, or `last.pt` when there is no best), a checkpoint file, or an export
(`model.pt`: the architecture is rebuilt from the export's metadata and the weights are read from the
scripted module). The trained model's architecture is kept; the recipe may only restate it, and a
species list or cutoff that does not fit stops the run with one line naming both values (a model
cannot learn a new element or see farther than it was built for).

Starting from a trained model, the Trainer (`Trainer.warm_start`) does three things here instead of the
from-scratch initialisation: it copies the weights, it refits the per-species energy reference on the
new training data by least squares on the residuals (a new data set, e.g. from another DFT code or
another phase, shifts the reference; the environment statistics of the trained model are kept, they
are part of what it learnt), and it freezes the named parts (`FREEZE_GROUPS`; frozen parameters get no
gradient, so no optimiser moves them, and the freeze is re-applied on resume).

This module sits in the training layer: it reads checkpoints and exports with torch alone (it does not
import `mlip.export`, which is above it).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from mlip.graph import Graph, collate, fit_energy_bias
from mlip.io.export_metadata import check_export_archive
from mlip.models import AtomicModel, build_model

# Named parts of each family that `model.freeze` may hold: parameter-name prefixes.
FREEZE_GROUPS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "deepmd": {"embedding": ("embedding.",), "fitting": ("fitting.",)},
    "nequip": {"embedding": ("embedding.",), "interactions": ("blocks.", "basis."),
               "readout": ("head_", "energy_scale"), "pair": ("pair.",)},
    "mtp": {"radial": ("radial_coeffs",), "moments": ("moment_coeffs",)},
}
# The per-species energy reference (eV) of each family: the tensor that `set_energy_bias` writes.
ENERGY_REFERENCE: Dict[str, str] = {"deepmd": "energy_bias", "nequip": "energy_shift", "mtp": "species_coeffs"}
# Name of the metadata file inside an export (the same constant as `mlip.export.METADATA_FILE`; the
# training layer may not import the export layer, tests/test_finetune.py checks that they agree).
EXPORT_METADATA_FILE = "mlip_metadata.json"
# Recipe model keys that are about the run, not the architecture, or that the model fills in from the
# data (`fit_statistics`): not compared with the trained model's configuration.
NOT_ARCHITECTURE = {"family", "init_from", "freeze", "species", "seed", "init_noise", "from_file", "fused",
                    "min_dist", "scaling", "avg_num_neighbors", "energy_scale"}
CUTOFF_KEYS = ("cutoff", "rcut")


def split_model_config(mcfg: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[str], List[str]]:
    """(the model's constructor keywords, init_from, freeze names) of a recipe's `model` section."""
    rest = dict(mcfg)
    init_from = rest.pop("init_from", None)
    freeze = rest.pop("freeze", None) or []
    if isinstance(freeze, str):
        freeze = [freeze]
    return rest, init_from, list(freeze)


# ------------------------------------------------------------------------------------ loading
def read_checkpoint(path: str) -> Dict[str, Any]:
    """The state dict a `Trainer` checkpoint holds; a missing, truncated or foreign file is one clear
    error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive: its directory is at the end
        raise ValueError(f"'{path}' is not a readable mlip checkpoint: not a complete zip archive "
                         f"({os.path.getsize(path)} bytes; truncated or damaged?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"'{path}' is not a readable mlip checkpoint (truncated or damaged?): "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(ckpt, dict) or not {"family", "model_config", "model"} <= set(ckpt):
        raise ValueError(f"'{path}' is not an mlip checkpoint")
    return ckpt


def load_checkpoint_model(path: str, which: str = "eval_model") -> AtomicModel:
    """Rebuild the (EMA) model from a checkpoint written by `Trainer` (which="model": the raw weights)."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["family"], ckpt["model_config"])
    state = ckpt[which] if ckpt.get(which) is not None else ckpt["model"]
    dtype = next(iter(v for v in state.values() if v.dtype.is_floating_point)).dtype
    model.to(dtype).load_state_dict(state)
    # carried into the export's metadata (`mlip info`): where training stopped and on what data
    model.training_info = {"step": ckpt.get("step"), "best_validation": ckpt.get("best"),
                           "checkpoint": os.path.basename(path),
                           **({"data": ckpt["data_summary"]} if ckpt.get("data_summary") else {})}
    return model.eval()


def load_export_model(path: str) -> AtomicModel:
    """The eager model inside an export: rebuilt from the metadata's family and config, with the
    weights of the scripted module (`model.*` in its state_dict). The export's active set (its grade
    matrix) is not carried over: it describes the old training set, not the one the model is about to
    learn."""
    files = {EXPORT_METADATA_FILE: ""}
    check_export_archive(path)  # a damaged export is refused, not fine-tuned from
    try:
        scripted = torch.jit.load(path, map_location="cpu", _extra_files=files)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"init_from '{path}' is neither an mlip checkpoint nor a loadable export: {first}") from None
    if not files[EXPORT_METADATA_FILE]:
        raise ValueError(f"init_from '{path}' is a TorchScript file but not an mlip export (no metadata)")
    meta = json.loads(files[EXPORT_METADATA_FILE])
    if "config" not in meta or "family" not in meta:
        raise ValueError(f"init_from '{path}': the export's metadata has no model config (exported by an "
                         "older mlip?); start from its run directory or checkpoint instead")
    state = {k[len("model."):]: v for k, v in scripted.state_dict().items() if k.startswith("model.")}
    model = build_model(meta["family"], meta["config"])
    # a scripted module's state_dict also holds non-persistent buffers (e.g. NequIP's cg_bank)
    transient = {n for n, _ in model.named_buffers()} - set(model.state_dict())
    state = {k: v for k, v in state.items() if k not in transient}
    dtype = next(iter(v for v in state.values() if v.dtype.is_floating_point)).dtype
    model.to(dtype).load_state_dict(state)
    return model.eval()


def resolve_init_path(spec: str) -> str:
    """The file behind `init_from`: a run directory → its best (else last) checkpoint."""
    if os.path.isdir(spec):
        for name in ("best.pt", "last.pt"):
            p = os.path.join(spec, "checkpoints", name)
            if os.path.isfile(p):
                return p
        raise FileNotFoundError(f"init_from '{spec}' is a directory without checkpoints/best.pt or last.pt "
                                "(not an `mlip train` run directory)")
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"init_from '{spec}' does not exist (give a run directory, a checkpoint or an export)")
    return spec


def load_init_model(spec: str) -> AtomicModel:
    """The trained model named by `init_from` (run directory, checkpoint or export)."""
    import zipfile

    path = resolve_init_path(spec)
    if not zipfile.is_zipfile(path):  # torch.save and torch.jit.save both write zip archives
        raise ValueError(f"init_from '{spec}' is neither an mlip checkpoint nor a loadable export")
    with zipfile.ZipFile(path) as z:  # only TorchScript archives hold compiled constants
        scripted = any(n.endswith("/constants.pkl") for n in z.namelist())
    return load_export_model(path) if scripted else load_checkpoint_model(path)


# ------------------------------------------------------------------------------------ checks
def check_compatible(model: AtomicModel, family: str, arch: Dict[str, Any], species: Optional[Sequence[str]],
                     data_species: Sequence[str], source: str) -> None:
    """One clear line when the trained `model` does not fit the recipe or the new data."""
    if model.family != family:
        raise ValueError(f"model.init_from '{source}' is a '{model.family}' model but the recipe's "
                         f"model.family is '{family}'")
    if species and list(species) != list(model.species):
        raise ValueError(f"model.init_from '{source}' has species {list(model.species)} but the recipe's "
                         f"model.species is {list(species)}")
    missing = sorted(set(data_species) - set(model.species))
    if missing:
        raise ValueError(f"model.init_from '{source}' has species {list(model.species)} but the training data "
                         f"also holds {missing}")
    trained = model.config()
    for key in CUTOFF_KEYS:
        if arch.get(key) is not None and not math.isclose(float(arch[key]), float(model.cutoff)):
            raise ValueError(f"model.init_from '{source}' has cutoff {model.cutoff:g} Å but the recipe's "
                             f"model.{key} is {float(arch[key]):g} Å")
    for key, value in arch.items():
        if key in NOT_ARCHITECTURE or key in CUTOFF_KEYS or value is None or key not in trained:
            continue
        if _normalise(value) != _normalise(trained[key]):
            raise ValueError(f"model.init_from '{source}' has {key} = {trained[key]!r} but the recipe's "
                             f"model.{key} is {value!r} (the architecture comes from the trained model)")


def _normalise(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_normalise(x) for x in v]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    return float(v)


# ------------------------------------------------------------------------------------ freeze, reference
def freeze_groups(family: str) -> Dict[str, Tuple[str, ...]]:
    return FREEZE_GROUPS.get(family, {})


def apply_freeze(model: AtomicModel, names: Sequence[str]) -> List[str]:
    """Stop the gradient of the named parts; returns the frozen parameter names."""
    if not names:
        return []
    groups = freeze_groups(model.family)
    unknown = [n for n in names if n not in groups]
    if unknown:
        valid = sorted(groups) or "none"
        raise ValueError(f"model.freeze: unknown part(s) {unknown} for family '{model.family}' (valid: {valid})")
    prefixes = tuple(p for n in names for p in groups[n])
    frozen = []
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def check_freeze_optimizer(model: AtomicModel, frozen: Sequence[str], optimizer: str) -> None:
    """A full-batch optimiser (varpro, lbfgs) solves the model's linear parameters exactly by least
    squares, whatever their gradient flag: freezing them needs Adam."""
    if optimizer == "adam" or not frozen or not hasattr(model, "linear_parameters"):
        return
    clash = sorted(set(frozen) & set(model.linear_parameters()))
    if clash:
        raise ValueError(f"model.freeze: optimizer {optimizer} solves {clash} exactly by least squares, so they "
                         "cannot be frozen; use optimizer adam or freeze other parts")


def energy_reference(model: AtomicModel) -> torch.Tensor:
    """The model's per-species energy reference (a copy)."""
    name = ENERGY_REFERENCE.get(model.family)
    if name is None or not hasattr(model, name):
        raise ValueError(f"family '{model.family}': no per-species energy reference known to refit")
    return getattr(model, name).detach().clone()


@torch.no_grad()
def frame_energies(model: AtomicModel, graphs: Sequence[Graph], batch_size: int = 16) -> List[float]:
    """The model's total energy of every graph (no forces)."""
    out: List[float] = []
    for k in range(0, len(graphs), batch_size):
        b = collate(graphs[k: k + batch_size])
        atom_e = model(b.species, b.edge_index, b.edge_vec)
        e = torch.zeros(b.n_frames, dtype=atom_e.dtype).index_add_(0, b.node_frame, atom_e)
        out.extend(float(x) for x in e)
    return out


def refit_energy_reference(model: AtomicModel, graphs: Sequence[Graph]) -> torch.Tensor:
    """Shift the per-species energy reference by the least-squares fit of the residuals E_ref − E_model
    on `graphs` (species absent from them keep their reference); returns the shift."""
    labelled = [g for g in graphs if g.energy is not None]
    if not labelled:
        return torch.zeros(len(model.species), dtype=torch.float64)
    pred = frame_energies(model, labelled)
    residual = [dataclasses.replace(g, energy=float(g.energy) - e) for g, e in zip(labelled, pred)]
    delta = fit_energy_bias(residual, len(model.species))
    model.set_energy_bias(energy_reference(model).double() + delta)
    return delta
