"""Configuration of SoRA (sparse low-rank adaptation); see :mod:`qaa.tuners.sora` for the method."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..utils import normalise_targets

__all__ = ["SoRAConfig", "PEFT_TYPE"]

#: ``peft_type`` of a saved SoRA adapter (:mod:`qaa.tuners.save_load`).
PEFT_TYPE = "SORA"
#: Gate initialisations: all ones (the default) or N(0, 1) as the SoRA release.
GATE_INITS = ("ones", "randn")



@dataclass
class SoRAConfig:
    """Hyper-parameters of SoRA.

    Attributes:
        target_modules: layers to wrap, peft's rule: a sequence of names (a module matches when its
            qualified name equals an entry or ends with ``"." + entry``), or one regex string that must match
            the whole qualified name. Default ``("q_proj", "v_proj")`` (LoRA paper, Hu et al. 2021, sec. 7.1;
            the project's comparison adapts the same layers for every method).
        r_max: rank of the gated branch before pruning. Default 8 (SoRA paper / release, ``lora_r=8``).
        alpha: LoRA scale numerator; the branch is multiplied by ``alpha / r_max``. Default 16 (SoRA
            release, ``LowRankLinear(lora_alpha=16)``). ``scaling`` stays ``alpha / r_max`` after pruning, so
            the pruned layer computes the same function.
        xi: soft-threshold of the proximal gate step, applied after every optimizer step. Default
            ``3e-4`` (SoRA release scripts, ``sparse_lambda_2=3e-4``).
        lambda_l1: optional weight of an L1 term ``lambda_l1 * mean|g|`` added to the loss (the release's
            ``sparse_lambda``, loss term in ``src/trainer.py``; its GLUE scripts use 10). ``None`` (default)
            trains with the proximal step alone.
        dropout: dropout probability on the branch input (LoRA convention). Default 0.0.
        gate_init: ``"ones"`` (default) or ``"randn"``. With ones and ``B = 0`` the branch starts as exactly
            LoRA with every rank equally open; the release initialises ``g ~ N(0, 1)`` (``src/lora.py``),
            which is offered as ``"randn"``.

    Raises:
        ValueError / TypeError (at construction): a value out of range or of the wrong type.
    """

    target_modules: str | Sequence[str] = ("q_proj", "v_proj")
    r_max: int = 8
    alpha: float = 16.0
    xi: float = 3e-4
    lambda_l1: float | None = None
    dropout: float = 0.0
    gate_init: str = "ones"

    def __post_init__(self) -> None:
        targets = normalise_targets(self.target_modules)
        self.target_modules = targets if isinstance(targets, str) else list(targets)
        if isinstance(self.r_max, bool) or not isinstance(self.r_max, int) or self.r_max < 1:
            raise ValueError(f"r_max must be a positive int, got {self.r_max!r}")
        for name in ("alpha", "xi", "dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.xi < 0:
            raise ValueError(f"xi must be >= 0, got {self.xi}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lambda_l1 is not None:
            if isinstance(self.lambda_l1, bool) or not isinstance(self.lambda_l1, (int, float)):
                raise ValueError(f"lambda_l1 must be a number or None, got {self.lambda_l1!r}")
            if not math.isfinite(self.lambda_l1) or self.lambda_l1 < 0:
                raise ValueError(f"lambda_l1 must be finite and >= 0, got {self.lambda_l1}")
        if self.gate_init not in GATE_INITS:
            raise ValueError(f"gate_init must be one of {GATE_INITS}, got {self.gate_init!r}")

    @property
    def scaling(self) -> float:
        """``alpha / r_max`` (LoRA's scale rule, Hu et al. 2021, sec. 4.1)."""
        return self.alpha / self.r_max

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the public fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SoRAConfig":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys, or values rejected by the constructor.
        """
        known = {"target_modules", "r_max", "alpha", "xi", "lambda_l1", "dropout", "gate_init"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SoRA config keys: {sorted(unknown)}")
        return cls(**data)

