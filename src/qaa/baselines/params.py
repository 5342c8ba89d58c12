"""Trainable-parameter accounting in peft's report format.

Every method of the comparison (QAA, LoRA, prefix tuning, SoRA, full fine-tuning) reports its trainable
parameters with the same line, so the numbers in the results table are produced by one rule.
"""

from __future__ import annotations

import torch.nn as nn

__all__ = ["trainable_parameter_summary", "format_trainable_parameters", "print_trainable_parameters"]


def trainable_parameter_summary(model: nn.Module) -> tuple[int, int, float]:
    """Count trainable and total parameters of ``model``.

    The rule is peft's ``PeftModel.get_nb_trainable_parameters`` (peft 0.21): every parameter returned by
    ``model.named_parameters()`` counts once (tied weights, e.g. a shared embedding / LM head, are
    deduplicated by identity), and a parameter is trainable when ``requires_grad`` is set. When ``model``
    is itself a peft model, its own ``get_nb_trainable_parameters`` is used, so quantised peft layers are
    counted exactly as peft counts them.

    Args:
        model: any ``torch.nn.Module``.

    Returns:
        ``(trainable, total, pct)``: ints, and ``pct = 100 * trainable / total`` as a Python float
        (``0.0`` for a model without parameters).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    counter = getattr(model, "get_nb_trainable_parameters", None)
    if callable(counter):
        trainable, total = counter()
    else:
        trainable = total = 0
        for _, param in model.named_parameters():
            n = param.numel()
            total += n
            if param.requires_grad:
                trainable += n
    pct = 100.0 * trainable / total if total else 0.0
    return int(trainable), int(total), pct


def format_trainable_parameters(model: nn.Module) -> str:
    """Return peft's report line for ``model``.

    Format (identical to ``PeftModel.print_trainable_parameters``)::

        trainable params: 1,234 || all params: 5,678 || trainable%: 21.7322

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    trainable, total, pct = trainable_parameter_summary(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    """Print :func:`format_trainable_parameters` of ``model`` to stdout."""
    print(format_trainable_parameters(model))
