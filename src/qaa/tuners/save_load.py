"""The one way files are written and adapters are saved and read: atomic, checksummed, umask-respecting.

Every file the package writes (adapters, caches, experiment results) goes through :func:`atomic_write_files`:
each file is written to a temporary name in its destination folder, flushed to disk, given the process's
normal permissions (``0o666 & ~umask``; ``tempfile.mkstemp`` would leave them private), and only then renamed
into place. A failure before the renames leaves the previous files untouched and removes the temporary files.

Adapter folders of every tuner (QAA, SoRA) have one layout, the one peft uses::

    adapter_config.json          the config: {"peft_type": ..., "format_version": 1, <config fields>,
                                 "modules": {<qualified module name>: {<sizes>}}}
    adapter_model.safetensors    the tensors, named "<module>.<tensor>"; its metadata repeats the config
                                 ("qaa_config") and holds a sha256 of the tensors ("qaa_sha256")

safetensors has no checksum of its own, so without the digest a flipped byte in the data region would load
silently as a different weight; the repeated config detects a config and weights from different saves.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Union

import torch

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "FORMAT_VERSION", "atomic_write_files", "atomic_write_text",
           "tensors_digest", "save_adapter_files", "read_adapter_files", "remove_stale_temporaries",
           "TENSORS_DIGEST_KEY"]

PathLike = Union[str, os.PathLike]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Version of the adapter folder layout above.
FORMAT_VERSION = 1


def _file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` would give a new file."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no portable read-only query; set and restore at once
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists (another user's) or unknowable: keep its files
    return True


#: A legacy temporary file (no pid in its name) this old is taken as left by a killed save.
_LEGACY_TMP_AGE_S = 600


def remove_stale_temporaries(directory: PathLike, names) -> list:
    """Remove the temporary files a killed :func:`atomic_write_files` left for the file ``names`` in
    ``directory``: ``.<name>.<pid>.<random>.tmp`` of a process that no longer runs (and legacy
    ``.<name>.<random>.tmp`` older than ten minutes). Other files are never touched. Returns the removed paths."""
    folder = Path(directory)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for name in names:
        tagged = re.compile(r"\." + re.escape(name) + r"\.(\d+)\.[A-Za-z0-9_]+\.tmp")
        legacy = re.compile(r"\." + re.escape(name) + r"\.[A-Za-z0-9_]{8}\.tmp")
        for entry in entries:
            m = tagged.fullmatch(entry.name)
            stale = False
            if m is not None:
                stale = int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1)))
            elif legacy.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    stale = time.time() - entry.stat().st_mtime > _LEGACY_TMP_AGE_S
            if stale and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed


def atomic_write_files(directory: PathLike, writers: Mapping[str, Callable[[str], None]]) -> None:
    """Write every file of ``writers`` (file name -> function that writes the file at a given path) into
    ``directory`` (created if needed): temporary files first (named ``.<name>.<pid>.<random>.tmp``), fsynced,
    then renamed in the order given; each file is replaced atomically. Files get the process's normal mode
    (``0o666 & ~umask``). Temporary files a killed earlier write left for the same names are removed first.
    Raises whatever a writer or the file system raises, after removing its temporary files."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder, list(writers))
    mode = _file_mode()
    tmps: dict = {}
    try:
        for name, write in writers.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
            os.close(fd)
            tmps[name] = tmp
            write(tmp)
            os.chmod(tmp, mode)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        for name, tmp in tmps.items():
            os.replace(tmp, folder / name)
    except BaseException:
        for tmp in tmps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_files`)."""
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    atomic_write_files(path.parent, {path.name: write})


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


#: Field of the saved config holding the tensors' digest (the loader uses it to tell a config left by an
#: interrupted save from an edited one; it is not part of the metadata :func:`read_adapter_files` returns).
TENSORS_DIGEST_KEY = "tensors_sha256"


def save_adapter_files(directory: PathLike, meta: dict, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write an adapter folder (layout in the module docstring).

    The weights file is the adapter: it holds the tensors, the config (metadata) and their checksum, and it is
    renamed into place first, so its rename is the one switch from the old adapter to the new one.
    ``adapter_config.json`` (the same config, for people and peft-like tools) follows; a save killed between
    the two leaves the new weights beside the old config, which :func:`read_adapter_files` recognises by the
    tensors' digest recorded in both and loads (with a warning) as the new adapter.

    ``meta`` must hold ``peft_type``; ``format_version`` and the tensors' digest are added. Tensors are saved as
    given (moved to the CPU, made contiguous). Raises ValueError for a ``meta`` without ``peft_type``.
    """
    from safetensors.torch import save_file

    if "peft_type" not in meta:
        raise ValueError("adapter metadata needs a 'peft_type'")
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    digest = tensors_digest(cpu)
    meta = {**meta, "format_version": FORMAT_VERSION, TENSORS_DIGEST_KEY: digest}
    meta_json = json.dumps(meta, indent=2, sort_keys=True)
    file_meta = {"qaa_config": meta_json, "qaa_sha256": digest}

    def write_json(p: str) -> None:
        with open(p, "w", encoding="utf-8") as f:
            f.write(meta_json + "\n")

    atomic_write_files(directory, {ADAPTER_WEIGHTS: lambda p: save_file(cpu, p, metadata=file_meta),
                                   ADAPTER_CONFIG: write_json})


def read_adapter_files(directory: PathLike, peft_type: str) -> tuple:
    """Read and verify an adapter folder written by :func:`save_adapter_files`: ``(meta, tensors)``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: not an adapter of ``peft_type``; unreadable, truncated or corrupted files (checksum);
            a config and weights from different saves; an unsupported ``format_version``.
    """
    from safetensors import safe_open

    cfg_path = os.path.join(directory, ADAPTER_CONFIG)
    w_path = os.path.join(directory, ADAPTER_WEIGHTS)
    for p in (cfg_path, w_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"adapter file missing: {p}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"corrupted adapter config {cfg_path}: {e}") from e
    if not isinstance(meta, dict) or meta.get("peft_type") != peft_type:
        found = meta.get("peft_type") if isinstance(meta, dict) else None
        raise ValueError(f"{cfg_path} is not a {peft_type} adapter config (peft_type={found!r})")
    version = meta.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: unsupported format_version {version!r} (this qaa reads {FORMAT_VERSION})")
    try:
        tensors = {}
        with safe_open(w_path, framework="pt") as f:
            file_meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
        raise ValueError(f"corrupted or truncated adapter weights {w_path}: {e}") from e
    digest = file_meta.get("qaa_sha256")
    actual = tensors_digest(tensors)
    if digest is not None and digest != actual:
        raise ValueError(f"corrupted adapter weights {w_path}: the tensors do not match their checksum")
    embedded = file_meta.get("qaa_config")
    if embedded is not None:
        try:
            embedded_meta = json.loads(embedded)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"corrupted metadata in {w_path}: {e}") from e
        if embedded_meta != meta:
            stale = (isinstance(embedded_meta, dict) and embedded_meta.get(TENSORS_DIGEST_KEY) == actual
                     and meta.get(TENSORS_DIGEST_KEY) not in (None, actual)
                     and embedded_meta.get("peft_type") == peft_type)
            if not stale:
                raise ValueError(f"{cfg_path} and {w_path} do not belong together (the config was edited or the "
                                 "files were mixed); re-save the adapter")
            # The config file belongs to other tensors (a save killed between its two renames, or a weights file
            # copied in): the weights file carries its own config and checksum, so it is the adapter.
            warnings.warn(f"{cfg_path} is from another save than {w_path} (an interrupted save?); loading the "
                          "adapter the weights file holds (its embedded config). The next save rewrites both.",
                          RuntimeWarning, stacklevel=3)
            meta = embedded_meta
            version = meta.get("format_version", FORMAT_VERSION)
            if version != FORMAT_VERSION:
                raise ValueError(f"{w_path}: unsupported format_version {version!r} (this qaa reads "
                                 f"{FORMAT_VERSION})")
    meta = {k: v for k, v in meta.items() if k != TENSORS_DIGEST_KEY}
    return meta, tensors
