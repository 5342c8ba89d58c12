"""What Hugging Face tools see in a QAA adapter folder: the base-model record, the model card, and a clear refusal
from peft's loaders.

A QAA adapter folder has peft's layout (``adapter_config.json`` + ``adapter_model.safetensors``), so peft and
transformers recognise it and try to load it, but QAA is not one of peft's methods: peft looks the folder's
``peft_type`` (``"QAA"``) up in its method table and fails with a bare ``KeyError: 'QAA'``. peft offers no hook
for a type it does not know (``peft.utils.register_peft_method`` accepts only members of its ``PeftType`` enum),
so :func:`register_with_peft` adds an entry for ``"QAA"`` to peft's config table whose construction raises
:class:`QAAAdapterNotForPeft`, a ``ValueError`` that says how to load the folder. ``import qaa`` runs it at once
when peft is already imported, and otherwise (:func:`install`) right after peft's ``peft.mapping`` module is
first imported (an import hook; qaa never imports peft itself), so any process that imported qaa gets the clear
message from ``PeftModel.from_pretrained(base, dir)``, ``model.load_adapter(dir)`` (transformers)
and ``AutoModelForCausalLM.from_pretrained(dir)`` (which loads the base named by ``base_model_name_or_path``,
then the adapter through peft). A process that never imported qaa still gets peft's ``KeyError``; the model card
written beside the adapter (:func:`model_card`) says how to load it.
"""
from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import os
import sys
from typing import Dict, Optional

import torch.nn as nn

from .config import PEFT_TYPE

__all__ = ["QAAAdapterNotForPeft", "register_with_peft", "install", "base_model_record", "model_card", "MODEL_CARD",
           "CARD_MARKER"]

MODEL_CARD = "README.md"
#: The line after the front matter of every card qaa writes (the front matter must open the file for the Hub to
#: read it): a README.md without it is the user's and is never overwritten.
CARD_MARKER = "<!-- qaa model card: written by qaa.save_adapter; a later save rewrites this file -->"

_HOW_TO_LOAD = ("load it with qaa: `import qaa; model = qaa.load_adapter(base_model, {path!r})` (base_model: the "
                "transformers model it was trained on{base}); `qaa adapter info {path}` shows what it holds")


class QAAAdapterNotForPeft(ValueError):
    """Raised when peft (or transformers through peft) is asked to load a QAA adapter folder."""


class _QAAConfigForPeft:
    """Stands in peft's config table for ``peft_type == "QAA"``: refuses, saying how to load the folder."""

    def __init__(self, *args, **kwargs):
        base = kwargs.get("base_model_name_or_path")
        raise QAAAdapterNotForPeft(
            "this is a QAA adapter (quantum-amplitude embedded adaptation, package qaa), not a peft method, so "
            "peft and transformers cannot load it; " + _HOW_TO_LOAD.format(
                path="<adapter folder>", base=f", saved from {base!r}" if base else ""))

    @classmethod
    def from_peft_type(cls, **kwargs):
        return cls(**kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls(**kwargs)

    @classmethod
    def check_kwargs(cls, **kwargs):
        return kwargs


def register_with_peft() -> bool:
    """Add the refusing entry for ``"QAA"`` to peft's config table if peft is imported (never imports it).

    Returns True when the entry is in place. Safe to call any number of times; an entry peft itself has for
    ``"QAA"`` (none today) is left alone.
    """
    mapping = sys.modules.get("peft.mapping")
    if mapping is None:
        if "peft" not in sys.modules:
            return False
        try:
            import peft.mapping as mapping  # peft is imported: its mapping module is cheap to reach
        except ImportError:
            return False
    table = getattr(mapping, "PEFT_TYPE_TO_CONFIG_MAPPING", None)
    if not isinstance(table, dict):
        return False
    table.setdefault(PEFT_TYPE, _QAAConfigForPeft)
    return True


class _AfterPeftMapping(importlib.abc.MetaPathFinder):
    """Import hook: once ``peft.mapping`` has executed, call :func:`register_with_peft` (then step aside)."""

    _NAME = "peft.mapping"

    def find_spec(self, fullname, path, target=None):
        if fullname != self._NAME:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot; also keeps the lookup below from finding this hook again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        register_with_peft()


def install() -> None:
    """Make peft's loaders refuse QAA folders clearly in this process: now if peft is imported, else as soon as
    it is (see the module docstring). Called by ``import qaa``."""
    if not register_with_peft() and "peft.mapping" not in sys.modules:
        if not any(isinstance(f, _AfterPeftMapping) for f in sys.meta_path):
            sys.meta_path.insert(0, _AfterPeftMapping())


def _base_of(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)


def base_model_record(model: nn.Module, module_names) -> Dict[str, object]:
    """What an adapter folder records about the model it was saved from.

    Returns ``{"base_model_name_or_path": str or None, "base_model_class": str, "base_model_fingerprint": str}``:
    the name or path transformers recorded when the model was loaded (``config._name_or_path``; ``None`` when the
    model was not loaded by transformers), the model's class, and ``"sha256:<hex>"`` of the adapted modules' base
    weight shapes (JSON of ``{module name: [out_features, in_features]}``, sorted by name, from the layers' logical
    sizes, so a 4-bit base whose packed weight has another shape gives the same value), which a different
    architecture or size changes and a quantisation or a dtype change does not.
    """
    from ..utils import layer_dims

    names = dict(model.named_modules(remove_duplicate=False))
    shapes = {}
    for name in sorted(module_names):
        mod = names.get(name)
        dims = layer_dims(_base_of(mod)) if mod is not None else None
        shapes[name] = [dims[1], dims[0]] if dims is not None else None  # (out_features, in_features)
    blob = json.dumps(shapes, sort_keys=True, separators=(",", ":")).encode()
    cfg = getattr(model, "config", None)
    name = getattr(cfg, "_name_or_path", None) or getattr(cfg, "name_or_path", None) or None
    return {"base_model_name_or_path": str(name) if name else None, "base_model_class": type(model).__name__,
            "base_model_fingerprint": "sha256:" + hashlib.sha256(blob).hexdigest()}


def model_card(meta: dict, n_params: int) -> str:
    """The adapter folder's README.md: method, base model, targets, trainable parameters and how to load it.

    ``meta``: the saved config (:func:`qaa.save_adapter`'s metadata). ``n_params``: trainable parameters.
    The front matter follows the Hugging Face model card format (``library_name``, ``tags``, and ``base_model``
    only when the recorded name looks like a Hub id, ``owner/name``, not a local path).
    """
    base = meta.get("base_model_name_or_path")
    hub_like = bool(base) and base.count("/") == 1 and not os.path.isabs(base) and not base.startswith(".")
    front = ["---", "library_name: qaa", "tags:", "- qaa", "- quantum-amplitude-embedded-adaptation",
             "- parameter-efficient-fine-tuning"]
    if hub_like:
        front.append(f"base_model: {base}")
    front.append("---")
    modules = sorted(meta.get("modules", {}))
    shown = ", ".join(f"`{m}`" for m in modules[:6]) + (f" and {len(modules) - 6} more" if len(modules) > 6 else "")
    lines = [*front, CARD_MARKER, "", f"# QAA adapter `{meta.get('adapter_name', 'default')}`", "",
             "Quantum-amplitude embedded adaptation (QAA): each adapted linear layer's input is amplitude-embedded "
             "into a statevector, evolved by a parameterised quantum circuit, measured, and mapped back to the "
             "layer's output size by a linear readout; the result is added to the frozen layer's output.", "",
             "| | |", "|---|---|",
             f"| base model | {base or 'not recorded (not loaded by transformers)'} |",
             f"| base model class | {meta.get('base_model_class', '?')} |",
             f"| base fingerprint | `{meta.get('base_model_fingerprint', '?')}` (adapted weights' shapes) |",
             f"| target modules | {meta.get('target_modules')} ({len(modules)} layers: {shown}) |",
             f"| ansatz | {meta.get('ansatz')}, {meta.get('n_layers')} layers |",
             f"| readout | {meta.get('readout')} |",
             f"| trainable parameters | {n_params:,} |",
             f"| qaa version | {meta.get('qaa_version')} |", "",
             "## Load", "", "peft and transformers cannot load this folder (QAA is not a peft method); qaa can:", "",
             "```python", "import qaa",
             "# base: the model above, loaded with transformers",
             "model = qaa.load_adapter(base, \"path/to/this/folder\")", "```", "",
             "`qaa adapter info path/to/this/folder` prints the config and verifies the checksums.", ""]
    return "\n".join(lines)


def card_writable(directory: str) -> bool:
    """True unless ``directory`` holds a README.md that qaa did not write (the user's: never overwritten)."""
    path = os.path.join(directory, MODEL_CARD)
    if not os.path.exists(path):
        return True
    try:
        with open(path, encoding="utf-8") as f:
            head = [f.readline().rstrip("\n") for _ in range(16)]
        return CARD_MARKER in head
    except (OSError, UnicodeDecodeError):
        return False


def saved_base(meta: Optional[dict]) -> str:
    """``" (saved from base model 'X')"`` for error messages, or ``""`` when nothing was recorded."""
    name = (meta or {}).get("base_model_name_or_path")
    return f" (the adapter was saved from base model {name!r})" if name else ""
