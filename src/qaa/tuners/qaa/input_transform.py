"""QAA's optional input transform (``QAAConfig(input_transform="standardize")``): the module a layer applies to
its input before the amplitude embedding, one per adapter. Its statistics come from
:func:`qaa.calibrate_input_transform`."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["InputStandardizer"]


class InputStandardizer(nn.Module):
    """The ``"standardize"`` input transform of one adapter on one layer: ``x' = (x - mean) / scale``.

    ``mean`` and ``scale`` are buffers of shape ``[d_in]`` in the adapter dtype, 0 and 1 (the identity, bit for
    bit) until :meth:`set_statistics` (called by :func:`qaa.calibrate_input_transform`) replaces them. The
    forward only reads them; ``calibrated`` records whether statistics were set.
    """

    def __init__(self, d_in: int, dtype: torch.dtype, device=None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d_in, dtype=dtype, device=device))
        self.register_buffer("scale", torch.ones(d_in, dtype=dtype, device=device))
        self.calibrated = False

    def set_statistics(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        """Copy ``mean`` and ``scale`` (shape ``[d_in]``, any float dtype) into the buffers; mark calibrated.

        Raises:
            ValueError: a shape other than ``[d_in]``, a non-finite value, or a ``scale`` entry ``<= 0``.
        """
        d_in = self.mean.shape[0]
        for what, t in (("mean", mean), ("scale", scale)):
            if tuple(t.shape) != (d_in,):
                raise ValueError(f"{what} must have shape ({d_in},), got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{what} holds non-finite values")
        if not (scale > 0).all():
            raise ValueError("scale must be > 0 everywhere")
        with torch.no_grad():
            self.mean.copy_(mean.to(self.mean.dtype))
            self.scale.copy_(scale.to(self.scale.dtype))
        self.calibrated = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def extra_repr(self) -> str:
        return f"d_in={self.mean.shape[0]}, calibrated={self.calibrated}"
