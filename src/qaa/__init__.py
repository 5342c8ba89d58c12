"""qaa: quantum-amplitude embedded adaptation (QAA) for parameter-efficient fine-tuning of LLMs.

    import qaa
    model = qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=4))
    model.print_trainable_parameters()
    qaa.save_adapter(model, "out/")
    model = qaa.load_adapter(base, "out/", is_trainable=False)
    with qaa.disable_adapter(model): ...
    base = qaa.detach(model)

Layout: :mod:`qaa.engine` (the statevector engine, torch-facing), :mod:`qaa.tuners` (QAA and the baselines:
attach, layers, save/load), :mod:`qaa.experiments` (the ``qaa`` command: fine-tuning and the comparison).
docs/design.md describes the method and the package.
"""
from ._version import __version__

from .engine import QAAFunction, ansatz_names, build_circuit, qaa_features, qubits_for_dim
from .engine.engines import engines
from .hardware import MeasurementSetting, evaluate_under, export_openqasm, measurement, shots
from .tuners.qaa import (MergeError, QAAConfig, QAALayer, attach, calibrate_input_transform, detach, detach_adapter,
                         disable_adapter, load_adapter, load_adapter_weights, load_adapters, merge, qaa_layers,
                         reset_adapter_parameters, save_adapter, set_adapter, unwrap_model)
from .tuners.utils import get_nb_trainable_parameters, print_trainable_parameters, trainable_parameters_line
from .tuners.qaa.hf_compat import install as _install_peft_refusal

_install_peft_refusal()  # peft's loaders refuse QAA folders with how to load them (tuners/qaa/hf_compat.py)

__all__ = [
    "QAAConfig", "QAAFunction", "QAALayer", "MergeError", "attach", "detach", "detach_adapter",
    "disable_adapter", "get_nb_trainable_parameters", "load_adapter", "load_adapter_weights", "load_adapters",
    "merge", "print_trainable_parameters", "qaa_features", "qaa_layers", "reset_adapter_parameters",
    "save_adapter", "set_adapter", "trainable_parameters_line", "ansatz_names", "build_circuit", "qubits_for_dim",
    "calibrate_input_transform", "unwrap_model", "QAATrainer", "QAASFTTrainer", "push_adapter_to_hub",
    "extract_adapter", "engines", "__version__", "export_openqasm", "MeasurementSetting", "measurement", "shots",
    "evaluate_under", "hardware_cost",
]


def __getattr__(name):
    # QAATrainer and extract_adapter need transformers, QAASFTTrainer trl: imported on first use.
    if name == "hardware_cost":  # needs transformers (meta-device models) only when called
        from .experiments.hardware_cost import hardware_cost

        return hardware_cost
    if name == "push_adapter_to_hub":  # needs huggingface_hub
        from .tuners.qaa.hub import push_adapter_to_hub

        return push_adapter_to_hub
    if name == "QAASFTTrainer":  # needs trl
        from .tuners.qaa.sft import QAASFTTrainer

        return QAASFTTrainer
    if name in ("QAATrainer", "extract_adapter"):
        from .tuners.qaa import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
