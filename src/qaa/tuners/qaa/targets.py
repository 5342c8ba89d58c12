"""Which layers a QAA config selects: the shared name-matching rule of :mod:`qaa.tuners.utils` plus QAA's own
checks (linear layers only, never a QAA layer's internals, no nested targets, not the output embeddings), and
the QAA layers a model holds."""
from __future__ import annotations

import re
from typing import Dict, Iterator, List, Tuple

from torch import nn

from ..utils import layer_dims, linear_candidates, matches_target
from .config import QAAConfig
from .layer import QAALayer

__all__ = ["qaa_layers", "check_targets"]


def qaa_layers(model: nn.Module) -> Iterator[Tuple[str, QAALayer]]:
    """``(name, layer)`` for every :class:`QAALayer` in ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, QAALayer):
            yield name, mod


def _find_targets(model: nn.Module, config: QAAConfig) -> List[str]:
    """Qualified names of the layers ``config.target_modules`` selects: linear layers (or QAA layers, which get
    another adapter), never the internals of a QAA layer (its base layer, output maps, ...).

    Raises:
        ValueError: an invalid regular expression; a selected module that is neither ``nn.Linear`` nor
            ``Conv1D`` (nor a QAA layer); a target nested inside another target; the model's output
            embeddings (``lm_head``): transformers resizes and ties that layer itself.
    """
    tm = config.target_modules
    if isinstance(tm, str):
        try:
            re.compile(tm)
        except re.error as e:
            raise ValueError(f"target_modules {tm!r} is not a valid regular expression ({e}); a string is matched "
                             "as a regex against full module names, a list by name suffix") from e
    # Every path to a module (remove_duplicate=False): a layer reached at two places (the same nn.Linear at
    # positions 0 and 2) is wrapped at each place it is targeted, each wrapper with its own adapter.
    wrapped = [name for name, mod in model.named_modules(remove_duplicate=False) if isinstance(mod, QAALayer)]
    targets, not_linear = [], []
    for name, mod in model.named_modules(remove_duplicate=False):
        if not name or any(name.startswith(w + ".") for w in wrapped):
            continue  # adapter internals are never targets
        if not matches_target(name, tm):
            continue
        if isinstance(mod, QAALayer) or layer_dims(mod) is not None:
            targets.append(name)
        elif isinstance(tm, (list, tuple)):
            not_linear.append(f"{name} ({type(mod).__name__})")
    if not_linear and isinstance(tm, (list, tuple)):
        raise ValueError(f"target_modules selects modules that are not nn.Linear/Conv1D: {', '.join(not_linear[:5])}")
    for outer in targets:
        for inner in targets:
            if inner.startswith(outer + "."):
                raise ValueError(f"target {inner!r} lies inside target {outer!r}; select one of them")
    seen: Dict[int, str] = {}
    for name in targets:
        mod = model.get_submodule(name)
        if isinstance(mod, QAALayer) and id(mod) in seen:
            raise ValueError(f"targets {seen[id(mod)]!r} and {name!r} are the same QAA layer object (one layer "
                             "reached at two places); QAA cannot give it an adapter per place. Wrap the base "
                             "layers before sharing them, or select one of the names")
        seen[id(mod)] = name
    get_out = getattr(model, "get_output_embeddings", None)
    out_emb = get_out() if callable(get_out) else None
    if out_emb is not None:
        for name in targets:
            mod = model.get_submodule(name)
            if mod is out_emb or (isinstance(mod, QAALayer) and mod.base_layer is out_emb):
                raise ValueError(f"{name} is the model's output embedding layer; QAA does not wrap it "
                                 "(transformers resizes and ties that layer itself)")
    return targets


def check_targets(model: nn.Module, config: QAAConfig) -> List[str]:
    """The qualified names :func:`attach` would wrap with ``config``, without changing ``model``.

    Raises:
        ValueError: as :func:`attach` for targets (nothing matches, with the candidate names; invalid regex;
            non-linear, nested or output-embedding targets).
    """
    targets = _find_targets(model, config)
    if not targets:
        hint = (" (a string is a regular expression matched against full names, e.g. '.*q_proj'; pass a list "
                "to match by name)" if isinstance(config.target_modules, str) else "")
        raise ValueError(f"target_modules {config.target_modules!r} matched no nn.Linear/Conv1D module{hint}. "
                         f"Candidate names: {', '.join(linear_candidates(model)) or '(none)'}")
    return targets
