"""What every tuner needs from a model: target matching, layer sizes, submodule replacement, trainable counts.

One implementation each, shared by QAA, SoRA and the peft-backed baselines. The matching rule is peft's
(``peft.tuners.tuners_utils.check_target_module_exists``): a string is a regular expression that must match
the whole qualified module name; a sequence entry matches a module whose name equals it or ends with
``"." + entry``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Optional, Union

from torch import nn

__all__ = [
    "Targets", "LINEAR_TYPES", "normalise_targets", "matches_target", "layer_dims", "linear_candidates",
    "find_targets", "set_submodule", "get_nb_trainable_parameters", "trainable_parameter_summary",
    "trainable_parameters_line", "print_trainable_parameters",
]

Targets = Union[str, Sequence[str]]

try:  # GPT-2 style fused projections store the weight as (d_in, d_out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # transformers missing: only nn.Linear is supported
    Conv1D = None  # type: ignore[assignment,misc]

#: Layer types a tuner can wrap: ``nn.Linear`` and transformers' GPT-2 ``Conv1D``.
LINEAR_TYPES: tuple = (nn.Linear,) + ((Conv1D,) if Conv1D is not None else ())


def normalise_targets(target_modules: Targets) -> Union[str, tuple]:
    """Validate ``target_modules``: a non-empty regex string, or a non-empty sequence of non-empty names.

    Returns the string unchanged, or the names as a tuple.

    Raises:
        ValueError: an empty string, an empty sequence or an empty name.
        TypeError: anything that is not a string or a sequence of strings.
    """
    if isinstance(target_modules, str):
        if not target_modules:
            raise ValueError("target_modules must not be an empty string")
        return target_modules
    if not isinstance(target_modules, Sequence):
        raise TypeError(f"target_modules must be a str or a sequence of str, got {type(target_modules).__name__}")
    names = tuple(target_modules)
    if not names:
        raise ValueError("target_modules must name at least one module")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"target_modules entries must be non-empty strings, got {name!r}")
    return names


def matches_target(name: str, target_modules: Targets) -> bool:
    """Whether the qualified module ``name`` is selected by ``target_modules`` (peft's rule, see the module
    docstring)."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def layer_dims(module: nn.Module) -> Optional[tuple]:
    """``(d_in, d_out)`` of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (weight stored ``(d_in, d_out)``), else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if Conv1D is not None and isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return None


def linear_candidates(model: nn.Module) -> list:
    """Sorted unique last name components of the linear layers of ``model`` (for "did you mean" messages)."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if name and layer_dims(mod) is not None})


def find_targets(model: nn.Module, target_modules: Targets,
                 skip: Optional[Callable[[str, nn.Module], bool]] = None) -> list:
    """``[(qualified_name, module)]`` of the modules ``target_modules`` selects, in ``named_modules`` order.

    ``skip(name, module)`` excludes modules a tuner must never wrap (e.g. its own internals).

    Raises:
        ValueError: nothing matches; the message lists the candidate linear-layer names of ``model``.
        TypeError / ValueError: ``target_modules`` is malformed (see :func:`normalise_targets`).
    """
    targets = normalise_targets(target_modules)
    found = [(name, mod) for name, mod in model.named_modules()
             if name and matches_target(name, targets) and not (skip is not None and skip(name, mod))]
    if not found:
        raise ValueError(f"target_modules {target_modules!r} matched no module of {type(model).__name__}. "
                         f"Candidate linear layer names: {', '.join(linear_candidates(model)) or '(none)'}")
    return found


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at the qualified ``name`` (e.g. ``"model.layers.0.self_attn.q_proj"``) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def get_nb_trainable_parameters(model: nn.Module) -> tuple:
    """``(trainable, total)`` parameter counts, as peft counts them (``PeftModel.get_nb_trainable_parameters``):
    every parameter of ``model.parameters()`` once (tied weights counted once), trainable when
    ``requires_grad``. A peft model is counted by peft itself (quantised layers as peft counts them).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    try:
        from peft import PeftModel
    except ImportError:
        PeftModel = None
    if PeftModel is not None and isinstance(model, PeftModel):
        trainable, total = PeftModel.get_nb_trainable_parameters(model)
        return int(trainable), int(total)
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def trainable_parameter_summary(model: nn.Module) -> tuple:
    """``(trainable, total, pct)`` with ``pct = 100 * trainable / total`` (0.0 for a model without parameters)."""
    trainable, total = get_nb_trainable_parameters(model)
    return trainable, total, (100.0 * trainable / total if total else 0.0)


def trainable_parameters_line(model: nn.Module) -> str:
    """peft's line: ``trainable params: 1,234 || all params: 5,678 || trainable%: 21.7322``."""
    trainable, total, pct = trainable_parameter_summary(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    """Print :func:`trainable_parameters_line` of ``model`` (peft's format)."""
    print(trainable_parameters_line(model))
