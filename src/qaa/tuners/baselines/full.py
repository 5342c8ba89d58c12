"""Full fine-tuning: every parameter trainable. The memory and quality reference of the comparison."""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn

__all__ = ["prepare_full_finetune", "save_full", "load_full"]


def prepare_full_finetune(model: nn.Module) -> nn.Module:
    """Make every floating-point parameter of ``model`` trainable, in place, and return ``model``.

    Integer or quantised-storage parameters (which cannot carry gradients) make this raise instead of being
    skipped silently, because a partly frozen model would not be the full fine-tuning reference.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` has no parameters, or a parameter is not floating point.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    params = list(model.named_parameters())
    if not params:
        raise ValueError("model has no parameters")
    bad = [n for n, p in params if not (p.dtype.is_floating_point or p.dtype.is_complex)]
    if bad:
        raise ValueError(f"parameters that cannot be trained (dtype not floating point): {bad[:5]}")
    for _, p in params:
        p.requires_grad_(True)
    return model


def save_full(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Save a fully fine-tuned transformers model with ``save_pretrained`` (safetensors, tied weights once).

    Raises:
        TypeError: ``model`` has no ``save_pretrained`` (not a transformers model).
    """
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"{type(model).__name__} has no save_pretrained; expected a transformers model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def load_full(model_dir: str | os.PathLike, model_cls=None, **kwargs) -> nn.Module:
    """Load a model saved by :func:`save_full` from the local folder (never from a hub).

    Args:
        model_dir: the folder.
        model_cls: transformers class with ``from_pretrained``; default ``AutoModelForCausalLM``.
        **kwargs: passed to ``from_pretrained`` (e.g. ``dtype``).

    Raises:
        FileNotFoundError: ``model_dir`` has no ``config.json``.
    """
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {d}")
    if model_cls is None:
        from transformers import AutoModelForCausalLM as model_cls
    return model_cls.from_pretrained(str(d), local_files_only=True, **kwargs)
