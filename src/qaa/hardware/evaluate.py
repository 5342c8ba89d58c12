"""Evaluate a model under a measurement setting: the building block of a shots / noise study."""
from __future__ import annotations

from typing import Callable, Optional, Tuple, TypeVar

import torch

from .measure import MeasurementRun, MeasurementSetting, measurement

__all__ = ["evaluate_under"]

T = TypeVar("T")


def evaluate_under(model: torch.nn.Module, setting: Optional[MeasurementSetting], fn: Callable[[torch.nn.Module], T]
                   ) -> Tuple[T, Optional[MeasurementRun]]:
    """``fn(model)`` in eval mode, without gradients, with every QAA layer measured under ``setting`` (None:
    exact features). Returns ``(fn's result, the MeasurementRun)`` (the run is None for ``setting=None``); its
    ``circuits`` and ``shots_used`` count what the evaluation would have run on a device. The model's
    training mode is restored afterwards.

    Example, test NLL at 1000 shots and 1% readout error (``pair_nll`` from :mod:`qaa.experiments.train`)::

        nll, run = evaluate_under(model, MeasurementSetting(shots=1000, readout_error=0.01, seed=0),
                                  lambda m: pair_nll(m, encoded, pad_id))
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if setting is None:
                return fn(model), None
            with measurement(setting) as run:
                return fn(model), run
    finally:
        model.train(was_training)
