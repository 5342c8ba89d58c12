"""Selection of the layers an adapter wraps, with peft's matching rule and a helpful error."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch.nn as nn

try:  # GPT-2 style fused projections store the weight as (d_in, d_out)
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency of the project
    Conv1D = None  # type: ignore[assignment,misc]

__all__ = ["normalise_targets", "module_matches", "find_targets", "linear_candidates", "linear_dims"]

LINEAR_TYPES: tuple[type, ...] = (nn.Linear,) + ((Conv1D,) if Conv1D is not None else ())


def normalise_targets(target_modules: str | Sequence[str]) -> str | tuple[str, ...]:
    """Validate ``target_modules``: a regex string, or a non-empty sequence of non-empty names.

    Raises:
        ValueError: empty sequence or empty name.
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


def module_matches(name: str, targets: str | tuple[str, ...]) -> bool:
    """peft's rule (``check_target_module_exists``): a string is a regex that must match the whole module
    name; a sequence entry matches a module whose name equals it or ends with ``"." + entry``."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def linear_candidates(model: nn.Module) -> list[str]:
    """Sorted unique last name components of the linear layers (``nn.Linear`` / GPT-2 ``Conv1D``)."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, LINEAR_TYPES)})


def find_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Return ``[(qualified_name, module)]`` of the modules that ``target_modules`` selects.

    Raises:
        ValueError: nothing matches; the message lists the candidate linear-layer names of ``model``.
    """
    targets = normalise_targets(target_modules)
    found = [(name, mod) for name, mod in model.named_modules() if name and module_matches(name, targets)]
    if not found:
        raise ValueError(
            f"target_modules {target_modules!r} matched no module of {type(model).__name__}. "
            f"Candidate linear layer names: {linear_candidates(model)}"
        )
    return found


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (weight stored as ``(d_in, d_out)``).

    Raises:
        TypeError: any other module type.
    """
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if Conv1D is not None and isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    raise TypeError(f"only nn.Linear and transformers Conv1D layers can be adapted, got {type(module).__name__}")
