"""Tuners: what attaches to a model, trains, and is saved and loaded.

- :mod:`.utils`: target matching, layer sizes, submodule replacement, trainable-parameter counts (shared);
- :mod:`.save_load`: the one atomic, checksummed file writer and adapter-folder layout (shared);
- :mod:`.optim`: optimizer parameter groups for any tuner (shared);
- :mod:`.qaa`: quantum-amplitude embedded adaptation;
- :mod:`.sora`: SoRA, a baseline implemented here;
- :mod:`.baselines`: LoRA and prefix tuning from peft, and full fine-tuning.

Nothing here depends on :mod:`qaa.experiments`.
"""
