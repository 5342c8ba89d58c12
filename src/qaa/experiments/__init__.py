"""The ``qaa`` command: ``qaa finetune`` (QAA on one task against the untuned base model) and ``qaa compare``
(QAA against the baselines and controls), with everything they need: settings and presets (:mod:`.settings`),
the method registry (:mod:`.registry`), data (:mod:`.data`), the base model (:mod:`.base_model`), training
(:mod:`.train`, :mod:`.memory`), metrics (:mod:`.metrics`) and the report (:mod:`.report`).

Needs the ``[experiments]`` extra; :mod:`qaa.engine` and :mod:`qaa.tuners` never import this package.
"""
