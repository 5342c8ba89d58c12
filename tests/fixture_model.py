"""The model and adapter values of the committed adapter fixtures (tests/tuners/fixtures): every value is a
closed-form function of its index, so the fixtures do not depend on a random generator."""
import math

import torch
from torch import nn


def _values(shape, phase: float) -> torch.Tensor:
    n = math.prod(shape)
    idx = torch.arange(n, dtype=torch.float64)
    return (0.5 * torch.sin(0.37 * idx + phase)).reshape(shape)


def fixture_model() -> nn.Module:
    """``Linear(8, 6) -> Tanh -> Linear(6, 5)``, float32, with closed-form weights."""
    m = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 5))
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.copy_(_values(tuple(p.shape), 0.1 * i))
    return m


def fixture_input() -> torch.Tensor:
    """``[3, 8]`` float32 inputs."""
    return _values((3, 8), 1.3).float() * 4


def set_fixture_adapter(model: nn.Module, name: str, phase: float) -> None:
    """Give adapter ``name`` of every QAA layer closed-form ``theta``, ``P`` and input statistics."""
    from qaa import qaa_layers

    with torch.no_grad():
        for k, (_, layer) in enumerate(qaa_layers(model)):
            if name not in layer.qaa_configs:
                continue
            th = layer.qaa_theta[name]
            th.copy_(_values(tuple(th.shape), phase + k))
            w = layer.qaa_out[name].weight
            w.copy_(_values(tuple(w.shape), phase + 2 * k + 0.5))
            if name in layer.qaa_input:
                d = layer.d_in
                layer.qaa_input[name].set_statistics(_values((d,), phase) * 0.1, 1.0 + _values((d,), phase + 1) ** 2)
