"""qaa: quantum-amplitude embedded adaptation (QAA) for parameter-efficient fine-tuning of LLMs.

    import qaa
    model = qaa.attach(model, qaa.QAAConfig(target_modules=["q_proj", "v_proj"], n_layers=4))
    model.print_trainable_parameters()
    qaa.save_adapter(model, "out/")
    model = qaa.load_adapter(base, "out/", is_trainable=False)
    with qaa.disable_adapter(model): ...
    base = qaa.detach(model)
"""
__version__ = "0.1.0"

from .config import QAAConfig
from .engine import ansatz_names, build_circuit, qubits_for_dim
from .engines import engines
from .function import QAAFunction, qaa_features
from .layer import QAALayer
from .model import (MergeError, attach, detach, detach_adapter, disable_adapter, get_nb_trainable_parameters,
                    load_adapter, merge, print_trainable_parameters, qaa_layers, save_adapter, set_adapter,
                    trainable_parameters_line)

__all__ = [
    "QAAConfig", "QAAFunction", "QAALayer", "MergeError", "attach", "detach", "detach_adapter",
    "disable_adapter", "get_nb_trainable_parameters", "load_adapter", "merge", "print_trainable_parameters",
    "qaa_features", "qaa_layers", "save_adapter", "set_adapter", "trainable_parameters_line", "ansatz_names",
    "build_circuit", "qubits_for_dim", "engines", "__version__",
]
