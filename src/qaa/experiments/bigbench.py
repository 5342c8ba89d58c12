"""The optional GEM source: generation tasks from the BIG-bench 1.0.0 source archive, cached and checksummed.

The project's earlier results (``docs/results/archive/``) were measured on the GEM tasks of the
``bigbench==1.0.0`` source distribution (``bigbench-1.0.0.tar.gz``, about 358 MB). The package registry no
longer serves that release (only a 0.0.1 placeholder without the GEM tasks), so nothing here downloads it: a
user who holds the archive points ``$QAA_BIGBENCH_SDIST`` at it (or leaves it in ``<cache>/downloads``), and
the GEM tasks (``e2e_nlg``, ``webnlg_en``, ``xsum``, ``common_gen``) load from it as before, so the archived
results stay reproducible for them. Without the archive, asking for a GEM task is an error that says what to
do; nothing else needs it (the default tasks read the vendored releases, :mod:`.sources`).

Only the needed ``task.json`` files are streamed out of the archive into a cache folder, and a
``manifest.json`` records their SHA-256 so that later loads can verify them (a file whose checksum no longer
matches is extracted again from the archive).

Cache layout (``cache_dir()`` is ``$QAA_CACHE_DIR`` or ``~/.cache/qaa``)::

    <cache>/downloads/bigbench-1.0.0.tar.gz           where a user may leave the archive
    <cache>/bigbench-1.0.0/manifest.json              {"files": {"gem/<task>/task.json": {...}}}
    <cache>/bigbench-1.0.0/gem/<task>/task.json
    <cache>/bigbench-1.0.0/.lock                      inter-process lock (``filelock``)

Each task file holds ``{"examples": [{"input": str, "target": str | list[str], ...}, ...]}``;
:func:`load_task` groups all targets of one input into one :class:`~qaa.experiments.data.Example`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Sequence

from filelock import FileLock

from ..tuners.save_load import atomic_write_files, atomic_write_text
from .cache import cache_dir
from .data import Example

__all__ = ["BIGBENCH_VERSION", "SDIST_FILENAME", "TASKS", "cache_dir", "ensure_task", "load_task"]

BIGBENCH_VERSION = "1.0.0"
#: File name pip gives the source archive.
SDIST_FILENAME = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
#: The GEM tasks this module can load.
TASKS = ("e2e_nlg", "webnlg_en", "xsum", "common_gen")

_ENV_SDIST = "QAA_BIGBENCH_SDIST"
_MEMBER = "bigbench/benchmark_tasks/gem/{task}/task.json"   # path inside the package, below the top folder
_CACHED = "gem/{task}/task.json"                            # path inside <cache>/bigbench-1.0.0
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------

def _data_root() -> Path:
    return cache_dir() / f"bigbench-{BIGBENCH_VERSION}"


def _check_task(name: str) -> str:
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(root: Path) -> dict:
    """The manifest's ``files`` table, or an empty one if the manifest is missing or unreadable."""
    try:
        data = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        files = data.get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_manifest(root: Path, files: dict) -> None:
    body = {"source": f"bigbench=={BIGBENCH_VERSION} (PyPI source archive)", "files": files}
    atomic_write_text(root / "manifest.json", json.dumps(body, indent=2, sort_keys=True) + "\n")


def _is_valid(root: Path, task: str, files: dict) -> bool:
    rel = _CACHED.format(task=task)
    entry = files.get(rel)
    path = root / rel
    if not isinstance(entry, dict) or not path.is_file():
        return False
    return entry.get("sha256") == _sha256(path)


# --------------------------------------------------------------------------------------------------
# Archive
# --------------------------------------------------------------------------------------------------

def _locate_sdist() -> Path:
    """Path of the bigbench source archive: ``$QAA_BIGBENCH_SDIST``, else ``<cache>/downloads``. Raises
    FileNotFoundError (saying what to do) when neither has it."""
    env = os.environ.get(_ENV_SDIST, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{_ENV_SDIST} is set to {env!r}, which is not a file")
        return path
    downloads = cache_dir() / "downloads"
    cached = downloads / SDIST_FILENAME
    if cached.is_file():
        return cached
    raise FileNotFoundError(
        f"the GEM tasks ({', '.join(TASKS)}) need the bigbench=={BIGBENCH_VERSION} source archive "
        f"({SDIST_FILENAME}), which the package registry no longer serves and qaa does not download. If you have "
        f"it, set {_ENV_SDIST}=/path/to/{SDIST_FILENAME} (or put it in {downloads}); otherwise use a vendored "
        "task: e2e, webnlg, webnlg_unseen or dart")


def _member_task(member_name: str, wanted: dict[str, str]) -> str | None:
    """Task whose task.json the archive member is (the archive has one top folder), else None."""
    name = member_name[2:] if member_name.startswith("./") else member_name
    parts = name.split("/", 1)
    return wanted.get(parts[1]) if len(parts) == 2 else None


def _extract(archive: Path, tasks: Sequence[str], root: Path) -> dict[str, str]:
    """Stream ``archive`` once and write the task.json of each of ``tasks`` below ``root``.

    Returns ``{task: sha256}`` for the tasks found. Stops reading as soon as all were found.
    """
    wanted = {_MEMBER.format(task=t): t for t in tasks}
    found: dict[str, str] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                task = _member_task(member.name, wanted)
                if task is None or task in found or not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                dest = root / _CACHED.format(task=task)
                dest.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()

                def copy(tmp: str, source=source, digest=digest) -> None:
                    with open(tmp, "wb") as out:
                        for chunk in iter(lambda: source.read(_CHUNK), b""):
                            digest.update(chunk)
                            out.write(chunk)

                atomic_write_files(dest.parent, {dest.name: copy})
                found[task] = digest.hexdigest()
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise RuntimeError(f"could not read the bigbench archive {archive}: {exc}") from exc
    return found


def ensure_task(name: str) -> Path:
    """Path to the cached, checksum-verified ``task.json`` of GEM task ``name``.

    Args:
        name: one of :data:`TASKS` (``"e2e_nlg"``, ``"webnlg_en"``, ``"xsum"``, ``"common_gen"``).

    Returns:
        ``cache_dir()/bigbench-1.0.0/gem/<name>/task.json``.

    If the file is missing, or its SHA-256 differs from the one in ``manifest.json``, the source archive
    is located (``$QAA_BIGBENCH_SDIST``, else ``cache_dir()/downloads``; never downloaded) and
    streamed once; the task.json of every supported task not validly cached is extracted in that pass
    (nothing else from the archive is written). Files and the manifest are written atomically
    (temporary file + ``os.replace``) under an inter-process file lock, so concurrent callers are safe.

    Raises:
        ValueError: ``name`` is not a supported task.
        FileNotFoundError: no archive (``$QAA_BIGBENCH_SDIST`` unset or naming a missing file, none cached).
        RuntimeError: the archive is unreadable, or it lacks the task.
    """
    _check_task(name)
    root = _data_root()
    path = root / _CACHED.format(task=name)
    if _is_valid(root, name, _read_manifest(root)):
        return path
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        files = _read_manifest(root)          # another process may have extracted it meanwhile
        if _is_valid(root, name, files):
            return path
        todo = [t for t in TASKS if t == name or not _is_valid(root, t, files)]
        archive = _locate_sdist()
        found = _extract(archive, todo, root)
        if name not in found:
            raise RuntimeError(f"{archive} has no member */{_MEMBER.format(task=name)}; "
                               f"is it the bigbench=={BIGBENCH_VERSION} source archive?")
        for task, digest in found.items():
            files[_CACHED.format(task=task)] = {
                "sha256": digest, "member": _MEMBER.format(task=task), "archive": archive.name}
        _write_manifest(root, files)
    return path


# --------------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------------



def load_task(name: str) -> list[Example]:
    """Load GEM task ``name`` as one :class:`Example` per unique input.

    Every ``{"input", "target"}`` pair of the task file is read (``target`` is a str or a list of str);
    inputs and references are stripped of surrounding whitespace, empty references are dropped,
    repeated references of one input are kept once, and inputs left without a reference are skipped.
    Examples are ordered by first appearance of their input in the file, references likewise, so the
    result is deterministic (E2E: 1000 pairs over 213 unique inputs).

    Returns:
        list of :class:`Example`.

    Raises:
        ValueError: unknown task, or the file does not have the expected structure.
        Also whatever :func:`ensure_task` raises.
    """
    path = ensure_task(name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    raw = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise ValueError(f"{path} has no 'examples' list")
    grouped: dict[str, dict[str, None]] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("input"), str):
            raise ValueError(f"{path}: example {i} has no string 'input'")
        target = item.get("target")
        targets = [target] if isinstance(target, str) else target
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"{path}: example {i} has a 'target' that is neither a str nor a list of str")
        refs = grouped.setdefault(item["input"].strip(), {})
        for t in targets:
            if t.strip():
                refs.setdefault(t.strip(), None)
    return [Example(inp, tuple(refs)) for inp, refs in grouped.items() if refs]
