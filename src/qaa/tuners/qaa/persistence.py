"""Saving and loading QAA adapters (peft's ``save_and_load`` in role): the adapter folder of one adapter, the
``save_pretrained`` folder of an attached model (every adapter, and the active combination), layout checks
before anything is touched, loading with rollback, and loading saved weights into adapters a (wrapped) model
already has. The files themselves are written and read by :mod:`qaa.tuners.save_load`."""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..save_load import atomic_write_text, save_adapter_files
from ..utils import layer_dims
from . import hf_compat
from .config import QAAConfig
from .distributed import (clean_module_name, collective, copy_full_into, deepspeed_masters, full_parameters,
                          full_tensor, is_distributed_wrapper, process_group, unwrap_model)
from .hf_compat import register_with_peft
from .hub import resolve_adapter_location
from .adapter_folder import (ACTIVE_FILE, PRETRAINED_ADAPTERS, _adapter_folder, _check_layout, _expected_layout,  # noqa: F401
                             nested_adapter_names, read_qaa_adapter, saved_adapter_name)
from .layer import QAALayer
from .model import (_activate, _active_names, _active_weights, _adapter_parameters, _check_weights, _restore,
                    _set_trainable, _snapshot, attach, qaa_layers, set_adapter)

__all__ = ["PRETRAINED_ADAPTERS", "ACTIVE_FILE", "save_adapter", "save_pretrained", "write_active",
           "read_qaa_adapter", "saved_adapter_name", "nested_adapter_names", "load_adapter", "load_adapter_weights",
           "load_adapters"]



def save_pretrained(model: nn.Module, save_directory, *args, **kwargs):
    """``model.save_pretrained`` of an attached model: the base weights under their own names (the QAA layers'
    ``state_dict`` hook), loadable with ``from_pretrained`` as the base model, with the adapter tensors beside
    them (for ``Trainer`` resume), and every adapter as an adapter folder in
    ``<save_directory>/qaa_adapters/<name>`` (restore with :func:`load_adapter` on that folder or on
    ``save_directory``). Adapters are checked (finite) before anything is written."""
    configs = model.__dict__.get("qaa_configs", {})
    states = {name: _adapter_state(model, name) for name in configs}
    for name, (tensors, _) in states.items():
        _check_finite(tensors, name)
    type(model).save_pretrained(model, save_directory, *args, **kwargs)
    if kwargs.get("is_main_process", True):
        for name in configs:
            save_adapter(model, os.path.join(os.fspath(save_directory), PRETRAINED_ADAPTERS, name), name)
        write_active(model, save_directory)


def write_active(model: nn.Module, directory) -> None:
    """Record the active adapters of ``model`` and their output weights in
    ``<directory>/qaa_adapters/active.json`` (``{"active": [names], "weights": [floats]}``), read back by
    :func:`load_adapters`."""
    folder = os.path.join(os.fspath(directory), PRETRAINED_ADAPTERS)
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(os.path.join(folder, ACTIVE_FILE), json.dumps(
        {"active": _active_names(model), "weights": _active_weights(model)}, indent=1) + "\n")


# ---------------------------------------------------------------- save / load
def _adapter_state(model: nn.Module, adapter_name: str,
                   masters: Optional[dict] = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, dict]]:
    """The tensors (whole, on the CPU, in the adapter's dtype) and module entries of adapter ``adapter_name`` of
    the attached model ``model``, named as in the plain model (wrapper name components removed). FSDP2
    ``DTensor`` parameters are all-gathered (collective); FSDP1 / ZeRO-3 ones must be whole already
    (:func:`.distributed.full_parameters`). ``masters``: ``{id(parameter): tensor}`` taken instead of a
    parameter's own value (DeepSpeed's float32 master copies, :func:`.distributed.deepspeed_masters`)."""
    from .layer import _DTYPES

    tensors, modules = {}, {}
    for raw_name, layer in qaa_layers(model):
        if adapter_name not in layer.qaa_configs:
            continue
        name = clean_module_name(raw_name)
        if name in modules:
            raise ValueError(f"two QAA layers are both named {name!r} once wrapper names are removed")
        dtype = _DTYPES[layer.qaa_configs[adapter_name].dtype]
        circ = layer._circuit(adapter_name)
        masters = masters or {}
        theta, weight = layer.qaa_theta[adapter_name], layer.qaa_out[adapter_name].weight
        tensors[f"{name}.theta"] = masters.get(id(theta), full_tensor(theta)).to(dtype)
        tensors[f"{name}.out_proj.weight"] = masters.get(id(weight), full_tensor(weight)).to(dtype)
        modules[name] = {"d_in": layer.d_in, "d_out": layer.d_out, "n_qubits": circ.n_qubits,
                         "n_params": circ.n_params}
        if adapter_name in layer.qaa_input:
            transform = layer.qaa_input[adapter_name]
            tensors[f"{name}.input_mean"] = full_tensor(transform.mean).to(dtype)
            tensors[f"{name}.input_scale"] = full_tensor(transform.scale).to(dtype)
            modules[name]["input_calibrated"] = bool(transform.calibrated)
    return tensors, modules


def _check_finite(tensors: Dict[str, torch.Tensor], adapter_name: str) -> None:
    for key, t in tensors.items():
        if not torch.isfinite(t).all():
            raise ValueError(f"adapter {adapter_name!r}: tensor {key} holds NaN or inf values (training diverged?); "
                             "nothing was written (the loader would refuse it)")


def _not_attached(model: nn.Module, adapter_name: str) -> KeyError:
    configs = getattr(unwrap_model(model), "qaa_configs", {})
    return KeyError(f"no adapter named {adapter_name!r}; attached: {sorted(configs)}"
                    + ("" if configs else f" (no QAA adapter found in this {type(model).__name__})"))


def save_adapter(model: nn.Module, save_directory: str, adapter_name: str = "default") -> None:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` for one adapter into a folder.

    Both files are first written to temporary files and only then renamed into place, so a save that fails or
    is interrupted never leaves a half-written file and keeps a previously saved adapter loadable. The weights
    file also embeds the config and a sha256 of the tensors (safetensors metadata); the loader checks both
    (the layout is :mod:`qaa.tuners.save_load`'s).

    ``model`` may be the attached model or any wrapper of it: ``DistributedDataParallel``, FSDP1
    (``FullyShardedDataParallel``, any ``use_orig_params``), FSDP2 (``fully_shard``), a DeepSpeed engine, a peft
    model, ``torch.compile``. Module names are always those of the plain model, and tensors are whole (sharded
    parameters are gathered) in the adapter's dtype. With a distributed wrapper in a process group of more than
    one rank the call is collective: every rank must call it; the tensors are gathered and checked on every
    rank, the group's rank 0 writes, and every rank returns once the files are in place (or raises if that
    write failed).

    Before anything is written the tensors are checked against the adapter's layout (the names and shapes
    :func:`load_adapter` requires: ``theta`` ``(n_params,)``, ``out_proj.weight`` ``(d_out, n_features)``,
    ``input_mean`` / ``input_scale`` ``(d_in,)``) and for finiteness, so a save never writes a folder that
    cannot be loaded and a failing save leaves the previous adapter in the folder intact.

    Raises:
        KeyError: the adapter does not exist.
        ValueError: a NaN or inf tensor, a tensor whose shape is not the layout's (e.g. a shard that was not
            gathered), or two layers with the same plain name (checked before the folder is touched).
        RuntimeError: (collective save, ranks other than 0) rank 0 could not write the files.
        OSError: the folder cannot be written.
    """
    inner = unwrap_model(model)
    configs = getattr(inner, "qaa_configs", {})
    if adapter_name not in configs:
        raise _not_attached(model, adapter_name)
    params = _adapter_parameters(inner, adapter_name)
    # DeepSpeed bf16 / fp16 keeps the model's copy of the parameters rounded to 16 bits: save the optimizer's
    # float32 master values instead (the adapter's dtype, as under FSDP's mixed precision).
    masters = deepspeed_masters(model, params)
    with full_parameters(model, params):
        tensors, modules = _adapter_state(inner, adapter_name, masters)
    _check_finite(tensors, adapter_name)
    _check_layout(configs[adapter_name], modules, tensors, "the adapter to save")
    from ..._version import __version__

    meta = configs[adapter_name].to_dict()
    meta.update(modules=modules, qaa_version=__version__, adapter_name=adapter_name,
                **hf_compat.base_model_record(inner, modules))
    register_with_peft()
    card = {}
    if hf_compat.card_writable(str(save_directory)):
        card[hf_compat.MODEL_CARD] = hf_compat.model_card(meta, sum(t.numel() for t in tensors.values()))
    if not collective(model):
        save_adapter_files(save_directory, meta, tensors, card)
        return
    import torch.distributed as dist

    group, _ = process_group(model)
    writer = dist.get_global_rank(group, 0)  # the group's rank 0 writes
    failure, status = None, [None]
    if dist.get_rank() == writer:
        try:
            save_adapter_files(save_directory, meta, tensors, card)
        except BaseException as e:  # reported to the other ranks, then re-raised here
            failure, status = e, [f"{type(e).__name__}: {e}"]
    dist.broadcast_object_list(status, src=writer, group=group)
    if failure is not None:
        raise failure
    if status[0] is not None:
        raise RuntimeError(f"rank {writer} could not write the adapter to {save_directory}: {status[0]}")


def load_adapter(model: nn.Module, load_directory: str, adapter_name: str = "default",
                 is_trainable: bool = False) -> nn.Module:
    """Attach the adapter saved in ``load_directory`` to ``model`` (a base model or one with other QAA
    adapters) and return the model.

    ``load_directory`` is an adapter folder (:func:`save_adapter`) or a ``save_pretrained`` folder of an
    attached model, whose adapter saved under ``adapter_name`` (in ``qaa_adapters/<adapter_name>``) is loaded;
    or a Hugging Face Hub id ``owner/name[@revision]`` that is not a local path, fetched through the Hub cache
    (offline mode honoured: :func:`qaa.tuners.qaa.hub.resolve_adapter_location`).

    Active and trainable afterwards (docs/design.md, "Reliability rules"): on a model without QAA adapters the
    loaded adapter is active (the base is frozen) and trainable only if ``is_trainable``. On a model that has
    adapters, ``is_trainable=False`` (a reference adapter) changes neither the active adapter nor any
    ``requires_grad``; ``is_trainable=True`` makes it active and the only trainable adapter, as
    :func:`attach` does. Parameters outside the adapters are left as they are.

    Everything is validated before the model is touched: a missing, truncated or corrupted file (the weights
    carry a checksum), a config and weights that disagree, a module that does not exist or has another shape,
    or a tensor of the wrong shape or a non-finite value raises (FileNotFoundError / ValueError) and leaves the
    model unchanged (should attaching still fail, the model is restored as it was).
    """
    if is_distributed_wrapper(model):
        raise ValueError(
            f"load_adapter adds adapter {adapter_name!r} to the model, which cannot be done inside a "
            f"{type(model).__name__}: DDP, FSDP and DeepSpeed register (and shard) the parameters they synchronise "
            "when they are built, so parameters added later would be neither synchronised nor sharded. Load the "
            "adapter into the plain model, then wrap it; to put saved weights into an adapter the wrapped model "
            "already has (e.g. to resume), use qaa.load_adapter_weights.")
    model = unwrap_model(model)  # peft, torch.compile
    load_directory = _adapter_folder(load_directory, adapter_name)
    if adapter_name in getattr(model, "qaa_configs", {}):
        raise ValueError(f"adapter {adapter_name!r} is already attached; choose another name")
    register_with_peft()
    config, modules, tensors, meta = read_qaa_adapter(load_directory, with_meta=True)
    names = dict(model.named_modules(remove_duplicate=False))
    for name, info in modules.items():
        d_in, d_out, _, _ = _expected_layout(config, name, info)
        mod = names.get(name)
        if mod is None:
            raise ValueError(f"adapter module {name!r} does not exist in this model"
                             f"{hf_compat.saved_base(meta)}")
        base = mod.base_layer if isinstance(mod, QAALayer) else mod
        dims = layer_dims(base)
        if dims is None or dims != (d_in, d_out):
            raise ValueError(f"adapter module {name!r} expects (d_in, d_out)=({d_in}, {d_out}), "
                             f"the model has {dims}{hf_compat.saved_base(meta)}")
        if isinstance(mod, QAALayer) and adapter_name in mod.qaa_configs:
            raise ValueError(f"adapter {adapter_name!r} is already attached to {name}")
    _check_layout(config, modules, tensors, f"adapter weights in {load_directory}")
    # Attach exactly the saved modules, then copy the weights; undo everything if that still fails.
    config = QAAConfig.from_dict({**config.to_dict(), "target_modules": "|".join(re.escape(n) for n in modules)})
    snap = _snapshot(model)
    had_adapters = bool(getattr(model, "qaa_configs", {}))
    previous_active = getattr(model, "qaa_active_adapter", None)
    previous_weights = _active_weights(model)
    try:
        attach(model, config, adapter_name=adapter_name, is_trainable=is_trainable)
        if had_adapters and not is_trainable:  # a reference adapter: what runs and what trains stay as they were
            if previous_active is not None:
                _activate(model, previous_active, previous_weights)
            else:
                for _, layer in qaa_layers(model):
                    layer.active_adapter = None
                model.qaa_active_adapter = None
        with torch.no_grad():
            for name, layer in qaa_layers(model):
                if name not in modules:
                    continue
                th = layer.qaa_theta[adapter_name]
                out = layer.qaa_out[adapter_name].weight
                th.copy_(tensors[f"{name}.theta"].to(th.dtype))
                out.copy_(tensors[f"{name}.out_proj.weight"].to(out.dtype))
                if adapter_name in layer.qaa_input:
                    transform = layer.qaa_input[adapter_name]
                    transform.set_statistics(tensors[f"{name}.input_mean"], tensors[f"{name}.input_scale"])
                    transform.calibrated = bool(modules[name].get("input_calibrated", True))
    except BaseException:
        _restore(model, snap)
        raise
    return model


#: Config fields that may differ between a saved adapter and the attached one it is loaded into: the target
#: pattern (a loaded adapter records its module names instead) and what only the initialisation used.
_WEIGHTS_FREE_FIELDS = ("target_modules", "seed", "init_std")


def load_adapter_weights(model: nn.Module, load_directory: str, adapter_name: str = "default") -> nn.Module:
    """Copy the adapter saved in ``load_directory`` into adapter ``adapter_name``, which ``model`` already has
    (e.g. to resume training), and return ``model``. Nothing else changes: the active adapter, ``requires_grad``
    flags and the model's structure stay as they are, so this works on wrapped and sharded models too
    (``DistributedDataParallel``, FSDP1, FSDP2, peft, ``torch.compile``); with a distributed wrapper in a process
    group of more than one rank it is collective: every rank calls it and reads the folder (which every rank
    must see), and each rank keeps its own shard of the loaded values.

    ``load_directory`` is an adapter folder (:func:`save_adapter`) or a ``save_pretrained`` folder (its
    ``qaa_adapters/<adapter_name>``).

    Raises:
        KeyError: ``model`` has no adapter ``adapter_name``.
        FileNotFoundError / ValueError: as :func:`load_adapter` for the folder; a saved config that differs from
            the attached adapter's (other than ``target_modules``, ``seed`` and ``init_std``); saved modules
            that are not exactly the layers holding the adapter, or of other sizes. Everything is checked
            before any value is copied.
    """
    inner = unwrap_model(model)
    configs = getattr(inner, "qaa_configs", {})
    if adapter_name not in configs:
        raise _not_attached(model, adapter_name)
    load_directory = _adapter_folder(load_directory, adapter_name)
    saved, modules, tensors = read_qaa_adapter(load_directory)
    attached = configs[adapter_name]
    differ = [k for k, v in attached.to_dict().items()
              if k not in _WEIGHTS_FREE_FIELDS and saved.to_dict().get(k) != v]
    if differ:
        details = ", ".join(f"{k}={saved.to_dict().get(k)!r} (attached {attached.to_dict()[k]!r})" for k in differ)
        raise ValueError(f"adapter in {load_directory} was saved with other settings than adapter {adapter_name!r} "
                         f"has: {details}")
    layers = {clean_module_name(name): layer for name, layer in qaa_layers(inner) if adapter_name in layer.qaa_configs}
    if set(layers) != set(modules):
        raise ValueError(f"adapter in {load_directory} covers other modules than adapter {adapter_name!r}: "
                         f"{sorted(set(layers) ^ set(modules))[:5]}")
    for name, layer in layers.items():
        d_in, d_out, _, _ = _expected_layout(saved, name, modules[name])
        if (d_in, d_out) != (layer.d_in, layer.d_out):
            raise ValueError(f"adapter module {name!r} expects (d_in, d_out)=({d_in}, {d_out}), "
                             f"the model has ({layer.d_in}, {layer.d_out})")
    with full_parameters(model, _adapter_parameters(inner, adapter_name), writeback=True), torch.no_grad():
        for name, layer in layers.items():
            copy_full_into(layer.qaa_theta[adapter_name], tensors[f"{name}.theta"])
            copy_full_into(layer.qaa_out[adapter_name].weight, tensors[f"{name}.out_proj.weight"])
            if adapter_name in layer.qaa_input:
                transform = layer.qaa_input[adapter_name]
                transform.set_statistics(tensors[f"{name}.input_mean"], tensors[f"{name}.input_scale"])
                transform.calibrated = bool(modules[name].get("input_calibrated", True))
    return model


def _read_active(directory, names: List[str]) -> Tuple[Optional[List[str]], Optional[List[float]]]:
    """The active adapters and weights recorded in ``directory`` (None, None when nothing is recorded).
    Raises ValueError for a record that is not valid JSON of that form or names an adapter not saved there."""
    path = os.path.join(os.fspath(directory), PRETRAINED_ADAPTERS, ACTIVE_FILE)
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
        active, weights = rec["active"], rec["weights"]
        if not (isinstance(active, list) and isinstance(weights, list) and len(active) == len(weights)):
            raise ValueError("'active' and 'weights' must be lists of one length")
        unknown = [n for n in active if n not in names]
        if unknown:
            raise ValueError(f"names adapters not saved in the folder: {unknown}")
        weights = _check_weights(weights, active)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: invalid record of the active adapters ({e})") from e
    return active, weights


def load_adapters(model: nn.Module, load_directory: str, is_trainable: bool = False) -> nn.Module:
    """Attach every adapter a ``save_pretrained`` or :class:`~qaa.QAATrainer` checkpoint folder holds, under its
    saved name, and make the recorded combination active (``qaa_adapters/active.json``: the active adapters and
    their output weights, :func:`set_adapter`); returns the model.

    A folder without that record activates its root adapter (a checkpoint's), else the first saved name.
    ``is_trainable=True`` makes the active adapters the trainable ones (:func:`set_adapter`). All or nothing:
    if any adapter fails to load (the errors of :func:`load_adapter`), the model is left as it was.

    Raises:
        FileNotFoundError: the folder holds no QAA adapter.
        ValueError: an adapter of that name is already attached, an invalid ``active.json``, or what
            :func:`load_adapter` raises.
    """
    if is_distributed_wrapper(model):
        raise ValueError("load_adapters adds adapters, which cannot be done inside a "
                         f"{type(model).__name__}: load into the plain model, then wrap it")
    model = unwrap_model(model)
    root = resolve_adapter_location(load_directory)
    folders = {name: os.path.join(root, PRETRAINED_ADAPTERS, name) for name in nested_adapter_names(root)}
    root_name = None
    if os.path.isfile(os.path.join(root, "adapter_config.json")):
        root_name = saved_adapter_name(root) or "default"
        if root_name in folders:
            raise ValueError(f"{root} holds adapter {root_name!r} twice (at its root and in {PRETRAINED_ADAPTERS})")
        folders = {root_name: root, **folders}
    if not folders:
        raise FileNotFoundError(f"{root} holds no QAA adapter (no adapter_config.json at its root or in "
                                f"{PRETRAINED_ADAPTERS}/<name>)")
    active, weights = _read_active(root, list(folders))
    if active is None:
        active, weights = [root_name or next(iter(folders))], None
    snap = _snapshot(model)
    try:
        for name, folder in folders.items():
            load_adapter(model, folder, adapter_name=name, is_trainable=False)
        set_adapter(model, active if len(active) > 1 else active[0], is_trainable=True if is_trainable else None,
                    weights=weights)
        if not is_trainable:
            for name in folders:
                _set_trainable(model, name, False, others_frozen=False)
    except BaseException:
        _restore(model, snap)
        raise
    return model
