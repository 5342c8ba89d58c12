"""Adapter-only checkpoints: a ``transformers.Trainer`` that saves and resumes QAA adapters alone, and the
extraction of an adapter from a full checkpoint folder.

``Trainer`` writes checkpoints through ``model.save_pretrained`` (the whole model); a callback cannot stop that
write, so :class:`QAATrainer` replaces the Trainer's own model saving (``save_model`` / ``_save``) and loading
(``_load_from_checkpoint``, ``_load_best_model``). Optimizer, scheduler, RNG and trainer state are saved by the
Trainer as usual (they are adapter-sized: only the adapter trains).
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, Optional

import torch
from transformers import Trainer

from ..save_load import ADAPTER_CONFIG, save_adapter_files
from .config import PEFT_TYPE, QAAConfig
from .distributed import clean_module_name, unwrap_model
from .layer import _DTYPES, _cached_circuit
from .config import check_adapter_name
from .adapter_folder import (PRETRAINED_ADAPTERS, _adapter_folder, _check_layout, nested_adapter_names,
                             read_qaa_adapter, saved_adapter_name)
from .persistence import load_adapter_weights, save_adapter, write_active

__all__ = ["QAATrainer", "extract_adapter", "adapter_folders", "checkpoint_adapter_folders"]

#: The file ``Trainer`` saves its arguments in (transformers' ``TRAINING_ARGS_NAME``).
_TRAINING_ARGS = "training_args.bin"


def adapter_folders(model: torch.nn.Module, directory: str) -> Dict[str, str]:
    """Where :class:`QAATrainer` keeps each adapter of ``model`` in a checkpoint ``directory``: the active
    adapter (the first of several active ones) in ``directory`` itself (an adapter folder, as peft lays out its checkpoints), every other one in
    ``directory/qaa_adapters/<name>``. Raises ValueError when ``model`` holds no QAA adapter."""
    inner = unwrap_model(model)
    configs = getattr(inner, "qaa_configs", {})
    if not configs:
        raise ValueError(f"{type(model).__name__} holds no QAA adapter: attach one before training with QAATrainer")
    active = getattr(inner, "qaa_active_adapter", None)
    if isinstance(active, list):  # several active: the first is the root adapter
        active = active[0]
    return {name: os.fspath(directory) if name == active
            else os.path.join(directory, PRETRAINED_ADAPTERS, check_adapter_name(name)) for name in configs}


def checkpoint_adapter_folders(directory: str, model: Optional[torch.nn.Module] = None) -> Dict[str, str]:
    """Adapter name -> folder of the adapters a :class:`QAATrainer` checkpoint ``directory`` holds, read from
    the checkpoint itself (not from which adapter is active now): ``qaa_adapters/<name>`` for each folder there,
    and ``directory`` for the root adapter under the name it records. A root adapter saved before names were
    recorded is the one adapter of ``model`` not found in ``qaa_adapters``.

    Raises:
        ValueError: the root adapter's name cannot be told (no record, and ``model`` does not single it out).
    """
    directory = os.fspath(directory)
    found = {name: os.path.join(directory, PRETRAINED_ADAPTERS, name) for name in nested_adapter_names(directory)}
    if _is_qaa_folder(directory):
        root = saved_adapter_name(directory)
        if root is None:
            configs = getattr(unwrap_model(model), "qaa_configs", {}) if model is not None else {}
            candidates = [n for n in configs if n not in found]
            if len(candidates) != 1:
                raise ValueError(f"{directory}: the adapter at the checkpoint's root records no name, and the model's "
                                 f"adapters {sorted(configs)} do not single it out (besides {sorted(found)})")
            root = candidates[0]
        if root in found:
            raise ValueError(f"{directory} holds adapter {root!r} twice (at its root and in {PRETRAINED_ADAPTERS})")
        found[root] = directory
    return found


def _is_qaa_folder(directory: str) -> bool:
    try:
        with open(os.path.join(directory, ADAPTER_CONFIG), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("peft_type") == PEFT_TYPE


class QAATrainer(Trainer):
    """``transformers.Trainer`` whose checkpoints (and ``save_model``) hold the QAA adapters only.

    A checkpoint folder holds the active adapter as an adapter folder (``adapter_config.json``,
    ``adapter_model.safetensors``; other adapters in ``qaa_adapters/<name>``), the tokenizer / processing class,
    ``training_args.bin`` and the Trainer's optimizer, scheduler, RNG and state files: no base weights.
    ``train(resume_from_checkpoint=...)`` copies the saved adapters into the model's adapters
    (:func:`qaa.load_adapter_weights`), so the model must be built and attached as for the first run; the
    resumed run is bit-identical to an uninterrupted one. Under FSDP / DeepSpeed the save is collective (every
    rank), as :func:`qaa.save_adapter` is; otherwise the main process writes. Takes the ``Trainer``'s arguments.

    Raises (from ``save_model`` / ``train``): ValueError when the model holds no QAA adapter; the errors of
    :func:`qaa.save_adapter` and :func:`qaa.load_adapter_weights`.
    """

    def _write_adapters(self, output_dir: str, model: torch.nn.Module) -> None:
        folders = adapter_folders(model, output_dir)
        for name, folder in folders.items():
            save_adapter(model, folder, name)
        if len(folders) > 1 and self.args.should_save:  # which adapters run, and their weights (load_adapters)
            write_active(unwrap_model(model), output_dir)

    def _write_extras(self, output_dir: str) -> None:
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, _TRAINING_ARGS))

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """Write the adapters (not the model) into ``output_dir`` (default ``args.output_dir``)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            self._write_adapters(output_dir, self.model_wrapped)  # collective: sharded parameters are gathered
            if self.args.should_save:
                self._write_extras(output_dir)
            return
        super().save_model(output_dir, _internal_call)  # calls _save on every process

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        """The main process writes the adapters, the processing class and the training arguments (``state_dict``
        is ignored: the adapters are read from the model)."""
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self._write_adapters(output_dir, self.model)
        self._write_extras(output_dir)

    def _load_adapters(self, directory: str, model: torch.nn.Module) -> None:
        """Copy each adapter the checkpoint holds into the model's adapter of the same name (whichever adapter is
        active now). Raises ValueError when the checkpoint's adapters are not exactly the model's."""
        configs = getattr(unwrap_model(model), "qaa_configs", {})
        if not configs:
            raise ValueError(f"{type(model).__name__} holds no QAA adapter: attach one before training with QAATrainer")
        found = checkpoint_adapter_folders(directory, model)
        if set(found) != set(configs):
            raise ValueError(f"{directory} holds the adapters {sorted(found)}, the model has {sorted(configs)}: "
                             "resume with the model built and attached as for the first run")
        for name, folder in found.items():
            load_adapter_weights(model, folder, name)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[torch.nn.Module] = None) -> None:
        if not _is_qaa_folder(resume_from_checkpoint):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # a full checkpoint
        self._load_adapters(resume_from_checkpoint, model if model is not None else self.model)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is None or not _is_qaa_folder(best):
            return super()._load_best_model()
        self._load_adapters(best, self.model_wrapped if self.is_fsdp_enabled else self.model)


# ---------------------------------------------------------------- extraction from a full checkpoint
_FULL_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model_fsdp.bin")
_PREFIXES = ("module.", "base_model.model.")  # DDP / DeepSpeed, peft


def _full_state_dict(directory: str) -> Dict[str, torch.Tensor]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        from safetensors.torch import load_file

        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(os.path.join(directory, shard)))
        return state
    for name in _FULL_WEIGHTS:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(path)
            return torch.load(path, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory} holds no model weights ({', '.join(_FULL_WEIGHTS)} or a safetensors "
                            "index) and no QAA adapter folder")


def _plain_name(key: str) -> str:
    key = clean_module_name(key)
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def extract_adapter(checkpoint_dir: str, save_directory: str, adapter_name: str = "default",
                    config: Optional[QAAConfig] = None) -> Dict[str, dict]:
    """Write adapter ``adapter_name`` of a full checkpoint folder as an adapter folder into ``save_directory``
    (atomically, as :func:`qaa.save_adapter`); returns the module entries written.

    ``checkpoint_dir`` is a ``save_pretrained`` / ``Trainer`` checkpoint of an attached model (its
    ``qaa_adapters/<adapter_name>`` folder is verified and copied), an adapter folder, or a folder holding the
    whole model's state dict (``model.safetensors``, a safetensors index, ``pytorch_model.bin``, or accelerate's
    ``pytorch_model_fsdp.bin``) with the adapter's tensors (``<module>.qaa_theta.<name>``,
    ``<module>.qaa_out.<name>.weight``, ``<module>.qaa_input.<name>.mean|scale``) beside the base weights; such a
    state dict does not hold the adapter's settings, so ``config`` (the ``QAAConfig`` it was trained with) is
    then required. Wrapper prefixes (``module.``, ``base_model.model.``, ``_fsdp_wrapped_module.``,
    ``_orig_mod.``) are removed from module names.

    Raises:
        FileNotFoundError: no adapter folder and no weights file.
        ValueError: a state dict without ``config``, without tensors of ``adapter_name``, or whose tensors do not
            match the layout ``config`` implies (nothing is written then).
    """
    folder = _adapter_folder(checkpoint_dir, adapter_name)
    if _is_qaa_folder(folder):
        _, modules, tensors, meta = read_qaa_adapter(folder, with_meta=True)
        meta = {**meta, "adapter_name": adapter_name}
        save_adapter_files(save_directory, meta, tensors)
        return modules
    if config is None:
        raise ValueError(f"{checkpoint_dir} holds no QAA adapter folder, only model weights, which do not record the "
                         "adapter's settings: pass config=QAAConfig(...) as the adapter was trained with")
    state = {_plain_name(k): v for k, v in _full_state_dict(checkpoint_dir).items()}
    pattern = re.compile(r"(.+)\.(qaa_theta\." + re.escape(adapter_name) + r"|qaa_out\." + re.escape(adapter_name)
                         + r"\.weight|qaa_input\." + re.escape(adapter_name) + r"\.(mean|scale))")
    renamed = {"qaa_input_mean": "input_mean", "qaa_input_scale": "input_scale"}
    tensors, modules = {}, {}
    for key, value in state.items():
        m = pattern.fullmatch(key)
        if m is None:
            continue
        module, what = m.group(1), m.group(2)
        if what.startswith("qaa_theta"):
            tensors[f"{module}.theta"] = value
        elif what.startswith("qaa_out"):
            tensors[f"{module}.out_proj.weight"] = value
        else:
            tensors[f"{module}.{renamed['qaa_input_' + m.group(3)]}"] = value
        modules.setdefault(module, {})
    if not modules:
        raise ValueError(f"{checkpoint_dir}: the model weights hold no tensor of adapter {adapter_name!r}")
    from ...engine import qubits_for_dim

    for module in modules:
        out = tensors.get(f"{module}.out_proj.weight")
        base = state.get(f"{module}.weight", state.get(f"{module}.base_layer.weight"))
        if out is None or base is None or base.dim() != 2:
            raise ValueError(f"{checkpoint_dir}: module {module!r} lacks its output map or its base weight")
        d_out = int(out.shape[0])
        # nn.Linear stores (d_out, d_in); GPT-2's Conv1D (d_in, d_out).
        d_in = int(base.shape[1]) if int(base.shape[0]) == d_out else int(base.shape[0])
        n = config.n_qubits if config.n_qubits is not None else qubits_for_dim(d_in)
        circ = _cached_circuit(config.ansatz, n, config.n_layers)
        modules[module] = {"d_in": d_in, "d_out": d_out, "n_qubits": circ.n_qubits, "n_params": circ.n_params}
        if config.input_transform is not None:
            modules[module]["input_calibrated"] = True
    _check_layout(config, modules, tensors, f"adapter {adapter_name!r} in {checkpoint_dir}")
    from ..._version import __version__

    meta = {**config.to_dict(), "modules": modules, "qaa_version": __version__}
    dtype = _DTYPES[config.dtype]
    save_adapter_files(save_directory, meta, {k: v.to(dtype).contiguous() for k, v in tensors.items()})
    return modules

