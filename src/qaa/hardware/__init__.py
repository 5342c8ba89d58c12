"""QAA beyond the exact statevector (docs/design.md §9): :mod:`.export` (trained circuits as OpenQASM 3 programs
with a manifest, optionally with the state preparation of given inputs), :mod:`.measure` (finite shots,
readout error and depolarising noise as a measurement setting every QAA layer obeys inside a ``with`` block;
parameter-shift gradients), :mod:`.noise` (local depolarising noise by Pauli trajectories), :mod:`.evaluate`
(evaluating a model under a setting). The cost of running QAA on a device is
:func:`qaa.experiments.hardware_cost.hardware_cost` (``qaa hardware-cost``)."""
from .evaluate import evaluate_under
from .export import amplitude_preparation, export_openqasm
from .measure import (DEPOLARIZING_MODELS, GRADIENTS, MeasurementRun, MeasurementSetting, active_measurement,
                          measured_features, measurement, shots)
from .noise import local_depolarized_probs

__all__ = ["export_openqasm", "amplitude_preparation", "MeasurementSetting", "MeasurementRun", "measurement",
           "shots", "active_measurement", "measured_features", "local_depolarized_probs", "evaluate_under",
           "GRADIENTS", "DEPOLARIZING_MODELS"]
