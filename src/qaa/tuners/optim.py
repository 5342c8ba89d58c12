"""Optimizer parameter groups for any tuner: one rule per kind of parameter that wants its own learning rate
(today QAA's circuit angles); everything else trainable in one group."""
from __future__ import annotations

from typing import List

from torch import nn

from .qaa.model import qaa_layers

__all__ = ["param_groups"]


def param_groups(model: nn.Module, lr: float, theta_lr_ratio: float = 1.0,
                 weight_decay: float = 0.0) -> List[dict]:
    """AdamW parameter groups giving the circuit angles their own learning rate.

    Every trainable ``theta`` of a QAA layer (any adapter) goes into a group with learning rate
    ``lr * theta_lr_ratio``; every other trainable parameter of ``model`` (``P``, or anything else left
    trainable) into a group with ``lr``. Each parameter appears exactly once (shared parameters once);
    frozen parameters are left out; an empty group is omitted. Both groups use ``weight_decay``. Angles are
    periodic and enter through ``cos``/``sin`` of half the angle, unlike ``P``'s weights, so their good step
    size need not be ``P``'s: the ratio lets the two be tuned apart.

    Returns:
        ``[{"params": [...], "lr": lr, "weight_decay": weight_decay, "name": "other"},
        {"params": [...], "lr": lr * theta_lr_ratio, "weight_decay": weight_decay, "name": "qaa_theta"}]``
        (``name`` is only a label; torch optimizers keep extra keys).

    Raises:
        ValueError: ``lr`` not a finite number > 0, ``theta_lr_ratio`` or ``weight_decay`` not a finite number
            >= 0, or ``model`` has no trainable parameter.
    """
    import math

    for what, value, low_ok in (("lr", lr, False), ("theta_lr_ratio", theta_lr_ratio, True),
                                ("weight_decay", weight_decay, True)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (value == 0 and not low_ok):
            raise ValueError(f"{what} must be a finite number {'>=' if low_ok else '>'} 0, got {value!r}")
    theta_ids = {id(p) for _, layer in qaa_layers(model) for p in layer.qaa_theta.values()}
    seen, thetas, others = set(), [], []
    for p in model.parameters():  # model.parameters() yields each shared parameter once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (thetas if id(p) in theta_ids else others).append(p)
    if not seen:
        raise ValueError("model has no trainable parameters")
    groups = []
    if others:
        groups.append({"params": others, "lr": float(lr), "weight_decay": float(weight_decay), "name": "other"})
    if thetas:
        groups.append({"params": thetas, "lr": float(lr) * float(theta_lr_ratio),
                       "weight_decay": float(weight_decay), "name": "qaa_theta"})
    return groups
