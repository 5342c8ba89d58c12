"""The one way files are written and adapters are saved and read: atomic, checksummed, umask-respecting.

Every file the package writes (adapters, caches, experiment results) goes through :func:`atomic_write_files`:
each file is written to a temporary name in its destination folder, flushed to disk, given the process's
normal permissions (``0o666 & ~umask``; ``tempfile.mkstemp`` would leave them private), and only then renamed
into place. A failure before the renames leaves the previous files untouched and removes the temporary files.

Adapter folders of every tuner (QAA, SoRA) have one layout, the one peft uses::

    adapter_config.json          the config: {"peft_type": ..., "format_version": 1, <config fields>,
                                 "modules": {<qualified module name>: {<sizes>}}}
    adapter_model.safetensors    the tensors, named "<module>.<tensor>"; its metadata repeats the config
                                 ("qaa_config") and holds a sha256 of the tensors ("qaa_sha256");
                                 the weights file is the adapter (the config file is a copy for
                                 people and tools), so its rename is a save's one switch

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
           "TENSORS_DIGEST_KEY", "CONFIG_DIGEST_KEY"]

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


#: Field of the saved config holding the tensors' digest (it is not part of the metadata
#: :func:`read_adapter_files` returns).
TENSORS_DIGEST_KEY = "tensors_sha256"
#: Field of the saved config holding a sha256 of the config itself (every other field, the tensors' digest
#: included): an ``adapter_config.json`` whose content no longer matches it was edited; one that matches but
#: differs from the weights file's embedded config is another save's (a save killed between its two renames,
#: or a reader between a concurrent save's renames).
CONFIG_DIGEST_KEY = "config_sha256"
#: Largest safetensors header read (bytes): an adapter's header is a few kB.
MAX_HEADER_BYTES = 16 * 2**20
_DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def _config_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != CONFIG_DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """safetensors bytes of ``tensors`` whose header lists ``metadata`` with its keys sorted and the tensors in
    data order, so identical inputs give identical bytes (safetensors 0.8's writer emits the metadata from a
    hash map, in an order that changes from process to process). The header is padded with spaces to a multiple
    of 8 bytes, as safetensors' writer does; the tensor data are safetensors' own."""
    from safetensors.torch import save

    blob = save(dict(tensors), metadata=dict(metadata))
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items()))}
    ordered.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"][0], kv[0])))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def save_adapter_files(directory: PathLike, meta: dict, tensors: Mapping[str, torch.Tensor],
                       extra_files: Mapping[str, str] = None) -> None:
    """Write an adapter folder (layout in the module docstring).

    The weights file is the adapter: it holds the tensors, the config (metadata) and their checksum, and it is
    renamed into place first, so its rename is the one switch from the old adapter to the new one.
    ``adapter_config.json`` (the same config, for people and peft-like tools) follows. A reader takes the
    weights file's embedded config; a config file from another save (a save killed between the two renames, or
    read between a concurrent save's renames) is recognised by its own digest (``config_sha256``) and ignored
    (with a warning), so a reader sees the old adapter or the new one, never a refusal.

    ``meta`` must hold ``peft_type``; ``format_version`` and the digests are added. Tensors are saved as given
    (moved to the CPU, made contiguous). ``extra_files`` (file name -> text, e.g. a model card) are written in
    the same atomic batch, after the two adapter files. Raises ValueError for a ``meta`` without ``peft_type``.
    """
    if "peft_type" not in meta:
        raise ValueError("adapter metadata needs a 'peft_type'")
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    digest = tensors_digest(cpu)
    meta = {k: v for k, v in meta.items() if k != CONFIG_DIGEST_KEY}
    meta = {**meta, "format_version": FORMAT_VERSION, TENSORS_DIGEST_KEY: digest}
    meta[CONFIG_DIGEST_KEY] = _config_digest(meta)
    meta_json = json.dumps(meta, indent=2, sort_keys=True)
    file_meta = {"qaa_config": meta_json, "qaa_sha256": digest}

    def write_json(p: str) -> None:
        with open(p, "w", encoding="utf-8") as f:
            f.write(meta_json + "\n")

    weights = _safetensors_bytes(cpu, file_meta)

    def write_weights(p: str) -> None:
        with open(p, "wb") as f:
            f.write(weights)

    def text_writer(text: str) -> Callable[[str], None]:
        def write(p: str) -> None:
            with open(p, "w", encoding="utf-8") as f:
                f.write(text)
        return write

    atomic_write_files(directory, {ADAPTER_WEIGHTS: write_weights, ADAPTER_CONFIG: write_json,
                                   **{name: text_writer(text) for name, text in (extra_files or {}).items()}})


def _read_weights(path: str, check_header) -> tuple:
    """Read a safetensors file through one open file (a save renaming a new file into place meanwhile changes
    nothing read here): ``(metadata, tensors)``. The header is parsed and ``check_header(metadata, shapes)``
    (``shapes``: name -> ``(dtype, shape)``) called before any tensor is read, so a file declaring unexpected or
    huge tensors is refused without reading them. Raises ValueError for a malformed or truncated file."""
    from safetensors.torch import load as load_bytes

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("the file is shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n + 8 > size:
            raise ValueError(f"header length {n} is not plausible for a file of {size} bytes")
        raw = f.read(n)
        try:
            header = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ValueError(f"unreadable header ({e})") from None
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise ValueError("the header's metadata is not an object")
        shapes, end = {}, 0
        for name, entry in header.items():
            try:
                dtype, shape, (begin, stop) = entry["dtype"], [int(d) for d in entry["shape"]], entry["data_offsets"]
                begin, stop = int(begin), int(stop)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"malformed header entry {name!r} ({e})") from None
            numel = 1
            for d in shape:
                numel *= d
            if dtype not in _DTYPE_SIZES or min(shape, default=0) < 0 or stop - begin != numel * _DTYPE_SIZES[dtype]:
                raise ValueError(f"header entry {name!r} is inconsistent (dtype {dtype}, shape {shape}, "
                                 f"bytes {begin}..{stop})")
            shapes[name] = (dtype, tuple(shape))
            end = max(end, stop)
        if check_header is not None:
            check_header(metadata, shapes)
        if 8 + n + end != size:
            raise ValueError(f"the file holds {size} bytes, its header declares {8 + n + end} (truncated?)")
        f.seek(0)
        data = f.read()
    if len(data) != size:
        raise ValueError("the file changed size while it was read")
    try:
        tensors = load_bytes(data)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(str(e)) from e
    return metadata, tensors


def read_adapter_files(directory: PathLike, peft_type: str, check_header=None) -> tuple:
    """Read and verify an adapter folder written by :func:`save_adapter_files`: ``(meta, tensors)``.

    The weights file is read first, through one open file, and is the adapter: its embedded config is the
    metadata returned. ``check_header(meta, shapes)`` (optional; ``meta`` the embedded config, or the config
    file's for a weights file without metadata; ``shapes`` name -> ``(safetensors dtype, shape)``) is called
    before any tensor is read and raises to refuse unexpected names or shapes. The tensors must match the
    digest in the weights file's metadata, or, for a weights file without metadata (re-saved by another tool),
    the digest the config records.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: not an adapter of ``peft_type``; unreadable, truncated or corrupted files (checksum);
            a config file edited after the save; an unsupported ``format_version``; what ``check_header``
            raises.
    """
    cfg_path = os.path.join(directory, ADAPTER_CONFIG)
    w_path = os.path.join(directory, ADAPTER_WEIGHTS)
    for p in (cfg_path, w_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"adapter file missing: {p}")
    state = {}

    def check(file_meta: dict, shapes: dict) -> None:
        try:
            _check(file_meta, shapes)
        except ValueError as e:
            raise _Refused(str(e)) from e

    def _check(file_meta: dict, shapes: dict) -> None:
        embedded = file_meta.get("qaa_config")
        if embedded is not None:
            try:
                state["embedded"] = json.loads(embedded)
            except (json.JSONDecodeError, RecursionError) as e:
                raise ValueError(f"corrupted metadata in {w_path}: {e}") from e
            if not isinstance(state["embedded"], dict) or state["embedded"].get("peft_type") != peft_type:
                raise ValueError(f"{w_path} is not a {peft_type} adapter (its embedded config says otherwise)")
            _check_version(state["embedded"], w_path)
        if check_header is not None:
            check_header(state.get("embedded", state.get("config")), shapes)

    try:
        with open(cfg_path, encoding="utf-8") as f:
            config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"corrupted adapter config {cfg_path}: {e}") from e
    if not isinstance(config, dict) or config.get("peft_type") != peft_type:
        found = config.get("peft_type") if isinstance(config, dict) else None
        raise ValueError(f"{cfg_path} is not a {peft_type} adapter config (peft_type={found!r})")
    _check_version(config, cfg_path)
    state["config"] = config
    try:
        file_meta, tensors = _read_weights(w_path, check)
    except _Refused:
        raise
    except ValueError as e:
        raise ValueError(f"corrupted or truncated adapter weights {w_path}: {e}") from e
    except OSError as e:
        raise ValueError(f"unreadable adapter weights {w_path}: {e}") from e
    actual = tensors_digest(tensors)
    embedded = state.get("embedded")
    digest = file_meta.get("qaa_sha256")
    if embedded is None:
        # No embedded config (a weights file re-saved by a tool that drops metadata, or a hand-made folder): the
        # config file is the adapter's config, and its recorded digest must still match the tensors.
        digest = digest if digest is not None else config.get(TENSORS_DIGEST_KEY)
        if digest is not None and digest != actual:
            raise ValueError(f"corrupted adapter weights {w_path}: the tensors do not match their checksum (the "
                             f"one {'the weights file' if file_meta.get('qaa_sha256') else cfg_path} records)")
        meta = config
    else:
        if digest is None or digest != actual:
            raise ValueError(f"corrupted adapter weights {w_path}: the tensors do not match their checksum")
        meta = embedded
        if config != embedded:
            own = config.get(CONFIG_DIGEST_KEY)
            intact = own is not None and own == _config_digest(config)
            legacy_stale = own is None and config.get(TENSORS_DIGEST_KEY) not in (None, actual)
            if not (intact or legacy_stale):
                raise ValueError(f"{cfg_path} and {w_path} do not belong together (the config was edited or the "
                                 "files were mixed); re-save the adapter")
            # The config file is another save's (a save killed between its two renames, a concurrent save, or a
            # weights file copied in): the weights file carries its own config and checksum, so it is the adapter.
            warnings.warn(f"{cfg_path} is from another save than {w_path} (an interrupted or concurrent save?); "
                          "loading the adapter the weights file holds (its embedded config). The next save rewrites "
                          "both.", RuntimeWarning, stacklevel=3)
    meta = {k: v for k, v in meta.items() if k not in (TENSORS_DIGEST_KEY, CONFIG_DIGEST_KEY)}
    return meta, tensors


class _Refused(ValueError):
    """A refusal by the header checks (its message is final)."""


def _check_version(meta: dict, path: str) -> None:
    version = meta.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {version!r} (this qaa reads {FORMAT_VERSION})")
