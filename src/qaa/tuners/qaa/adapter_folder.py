"""The files of a QAA adapter folder: reading and verifying one (:func:`read_qaa_adapter`), the tensor layout
its config implies and the checks against it, and where the adapters of a ``save_pretrained`` folder or a
checkpoint live (``qaa_adapters/<name>``). Writing and loading into a model are :mod:`.persistence`'s."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

import torch

from ..save_load import read_adapter_files
from .config import PEFT_TYPE, QAAConfig, check_adapter_name
from .hub import resolve_adapter_location
from .layer import _cached_circuit

__all__ = ["PRETRAINED_ADAPTERS", "ACTIVE_FILE", "read_qaa_adapter", "saved_adapter_name", "nested_adapter_names"]

#: Sub-folder of a ``save_pretrained`` folder holding one adapter folder per attached adapter.
PRETRAINED_ADAPTERS = "qaa_adapters"
#: File in that sub-folder recording the active adapters and their output weights
#: (:func:`qaa.tuners.qaa.persistence.load_adapters`).
ACTIVE_FILE = "active.json"


def read_qaa_adapter(directory, with_meta: bool = False) -> tuple:
    """Read and verify the QAA adapter folder ``directory``: ``(config, modules, tensors)`` (and the saved
    metadata as a fourth item with ``with_meta``).

    The weights file's header (names, dtypes, shapes) is checked against the layout its config implies before
    any tensor is read (a file declaring a huge or unexpected tensor is refused without reading it); then the
    checksum, the values (finite, ``input_scale > 0``) and the config (every field present, correct types).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: what :func:`qaa.tuners.save_load.read_adapter_files` raises, an invalid config, or tensors
            that are not the layout's.
    """
    def parse(meta) -> Tuple[QAAConfig, dict]:
        if not isinstance(meta, dict):
            raise ValueError(f"adapter config in {directory} is not an object")
        try:
            config = QAAConfig.from_dict({k: v for k, v in meta.items()}, saved=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"invalid adapter config in {directory}: {e}") from e
        modules = meta.get("modules")
        if not isinstance(modules, dict) or not modules:
            raise ValueError(f"adapter config in {directory} lists no modules")
        return config, modules

    def check_header(meta, shapes) -> None:
        config, modules = parse(meta)
        expected = _layout_shapes(config, modules)
        where = f"adapter weights in {directory}"
        if set(shapes) != set(expected):
            raise ValueError(f"{where}: unexpected or missing tensors: {sorted(set(shapes) ^ set(expected))[:5]}")
        for key, (dtype, shape) in shapes.items():
            if dtype not in ("F16", "BF16", "F32", "F64"):
                raise ValueError(f"{where}: tensor {key} has dtype {dtype}, expected a float dtype")
            if shape != expected[key]:
                raise ValueError(f"{where}: tensor {key} has shape {shape}, expected {expected[key]}")

    meta, tensors = read_adapter_files(directory, PEFT_TYPE, check_header=check_header)
    config, modules = parse(meta)
    _check_layout(config, modules, tensors, f"adapter weights in {directory}")
    return (config, modules, tensors, meta) if with_meta else (config, modules, tensors)


def _layout_shapes(config: QAAConfig, modules: dict) -> Dict[str, tuple]:
    """Tensor name -> shape of the adapter layout ``config`` and the module entries ``modules`` imply."""
    shapes = {}
    for name, info in modules.items():
        d_in, d_out, n_params, n_feat = _expected_layout(config, name, info)
        shapes[f"{name}.theta"] = (n_params,)
        shapes[f"{name}.out_proj.weight"] = (d_out, n_feat)
        if config.input_transform is not None:
            shapes[f"{name}.input_mean"] = (d_in,)
            shapes[f"{name}.input_scale"] = (d_in,)
    return shapes


def _check_layout(config: QAAConfig, modules: dict, tensors: Dict[str, torch.Tensor], where: str) -> None:
    """Check that ``tensors`` are exactly the adapter layout ``config`` and the module entries ``modules`` imply
    (:func:`_layout_shapes`): the names, the shapes, float dtypes, finite values, ``input_scale > 0``. Raises
    ValueError naming ``where``."""
    if not isinstance(modules, dict) or not modules:
        raise ValueError(f"{where}: no modules")
    expected = _layout_shapes(config, modules)
    for key, shape in expected.items():
        t = tensors.get(key)
        if t is None or tuple(t.shape) != shape:
            raise ValueError(f"{where}: tensor {key} missing or of shape "
                             f"{None if t is None else tuple(t.shape)}, expected {shape}")
    for k, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{where}: tensor {k} has dtype {t.dtype}, expected a float dtype")
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: tensor {k} holds non-finite values")
    if config.input_transform is not None:
        for n in modules:
            if not (tensors[f"{n}.input_scale"] > 0).all():
                raise ValueError(f"{where}: tensor {n}.input_scale holds entries <= 0")
    if set(tensors) != set(expected):
        raise ValueError(f"{where}: unexpected or missing tensors: {sorted(set(tensors) ^ set(expected))[:5]}")


def _expected_layout(config: QAAConfig, name: str, info) -> Tuple[int, int, int, int]:
    """``(d_in, d_out, n_params, n_features)`` a saved module entry implies, checked for consistency."""
    from ...engine import n_features, qubits_for_dim

    if not isinstance(info, dict):
        raise ValueError(f"adapter config: entry of module {name!r} is not an object")
    try:
        d_in, d_out, n_qubits, n_params = (int(info[k]) for k in ("d_in", "d_out", "n_qubits", "n_params"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"adapter config: entry of module {name!r} lacks d_in/d_out/n_qubits/n_params ({e})") from e
    if d_in < 1 or d_out < 1:
        raise ValueError(f"adapter config: module {name!r} has invalid sizes d_in={d_in}, d_out={d_out}")
    need = config.n_qubits if config.n_qubits is not None else qubits_for_dim(d_in)
    circ = _cached_circuit(config.ansatz, need, config.n_layers)
    if n_qubits != circ.n_qubits or n_params != circ.n_params:
        raise ValueError(f"adapter config: module {name!r} records n_qubits={n_qubits}, n_params={n_params}; "
                         f"the config implies {circ.n_qubits} and {circ.n_params}")
    return d_in, d_out, n_params, n_features(circ, config.readout)


def saved_adapter_name(directory) -> Optional[str]:
    """The adapter name an adapter folder records (``adapter_name`` in its config; None for folders saved before
    names were recorded, or no readable adapter config)."""
    try:
        with open(os.path.join(os.fspath(directory), "adapter_config.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    name = meta.get("adapter_name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def nested_adapter_names(directory) -> List[str]:
    """Names of the adapter folders in ``directory/qaa_adapters`` (sorted)."""
    nested = os.path.join(os.fspath(directory), PRETRAINED_ADAPTERS)
    try:
        return sorted(e.name for e in os.scandir(nested)
                      if e.is_dir() and os.path.isfile(os.path.join(e.path, "adapter_config.json")))
    except OSError:
        return []


def _adapter_folder(load_directory, adapter_name: str) -> str:
    """The folder holding adapter ``adapter_name`` in ``load_directory``: its ``qaa_adapters/<adapter_name>``
    (a ``save_pretrained`` folder, or a checkpoint's non-root adapter) when there is one, else the folder
    itself. A folder that holds several adapters (an adapter at its root and others in ``qaa_adapters``) and
    records its root adapter under another name has no adapter ``adapter_name``: ValueError listing those it
    has. A single adapter folder loads under any name.

    Raises:
        ValueError: an invalid ``adapter_name`` (:func:`check_adapter_name`), or no such adapter in a folder of
            several.
    """
    check_adapter_name(adapter_name)
    root = resolve_adapter_location(load_directory)
    nested = os.path.join(root, PRETRAINED_ADAPTERS, adapter_name)
    if os.path.isfile(os.path.join(nested, "adapter_config.json")):
        return nested
    others = nested_adapter_names(root)
    if os.path.isfile(os.path.join(root, "adapter_config.json")):
        recorded = saved_adapter_name(root)
        if others and recorded is not None and recorded != adapter_name:
            raise ValueError(f"{root} holds adapters {sorted([recorded] + others)}, none named {adapter_name!r}")
        return root
    if others:
        raise ValueError(f"{root} holds adapters {others}, none named {adapter_name!r}")
    return root
