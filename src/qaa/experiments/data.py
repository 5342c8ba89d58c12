"""GEM generation tasks from the BIG-bench 1.0.0 source archive, cached and checksummed.

The data come from the ``bigbench==1.0.0`` source distribution on PyPI (``bigbench-1.0.0.tar.gz``,
about 358 MB). It is never installed: only the needed ``task.json`` files are streamed out of the
archive into a cache folder, and a ``manifest.json`` records their SHA-256 so that later loads can
verify them (a file whose checksum no longer matches is extracted again).

Cache layout (``cache_dir()`` is ``$QAA_CACHE_DIR`` or ``~/.cache/qaa``)::

    <cache>/downloads/bigbench-1.0.0.tar.gz           only when pip fetched the archive
    <cache>/bigbench-1.0.0/manifest.json              {"files": {"gem/<task>/task.json": {...}}}
    <cache>/bigbench-1.0.0/gem/<task>/task.json
    <cache>/bigbench-1.0.0/.lock                      inter-process lock (``filelock``)

Where the archive comes from, in order: ``$QAA_BIGBENCH_SDIST`` (a path to ``bigbench-1.0.0.tar.gz``),
an archive already in ``<cache>/downloads``, else
``python -m pip download --no-deps --no-binary :all: bigbench==1.0.0 -d <cache>/downloads``.

Each task file holds ``{"examples": [{"input": str, "target": str | list[str], ...}, ...]}``;
:func:`load_task` groups all targets of one input into one :class:`Example`, and
:func:`split_by_input` splits by unique input so that no test input is seen in training.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from filelock import FileLock

from ..tuners.save_load import atomic_write_files, atomic_write_text

__all__ = [
    "BIGBENCH_VERSION", "SDIST_FILENAME", "TASKS", "PROMPT_TEMPLATES", "Example", "cache_dir", "ensure_task",
    "load_task", "split_by_input", "split_three", "webnlg_triples", "seen_inputs", "training_pairs",
    "format_prompt",
]

BIGBENCH_VERSION = "1.0.0"
#: File name pip gives the source archive.
SDIST_FILENAME = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
#: The GEM tasks this module can load.
TASKS = ("e2e_nlg", "webnlg_en", "xsum", "common_gen")

_ENV_CACHE = "QAA_CACHE_DIR"
_ENV_SDIST = "QAA_BIGBENCH_SDIST"
_MEMBER = "bigbench/benchmark_tasks/gem/{task}/task.json"   # path inside the package, below the top folder
_CACHED = "gem/{task}/task.json"                            # path inside <cache>/bigbench-1.0.0
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Root folder of the qaa cache: ``$QAA_CACHE_DIR`` if set and non-empty, else ``~/.cache/qaa``.

    The folder is not created here; the functions that write into it create what they need.
    """
    env = os.environ.get(_ENV_CACHE, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qaa"


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

#: pip release used when the installed pip refuses the archive: pip >= 25 stops ``pip download`` of
#: bigbench 1.0.0 because its metadata declares a direct-URL dependency (bleurt), even with --no-deps.
#: Older pips fetch the unchanged sdist; a pip wheel runs directly (``python pip.whl/pip ...``).
FALLBACK_PIP = "pip==24.0"


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise RuntimeError(f"could not run pip to fetch bigbench=={BIGBENCH_VERSION}: {exc}") from exc


def _download_sdist(downloads: Path) -> Path:
    """Fetch the bigbench source archive with pip into ``downloads`` (via a temporary folder).

    Tries the installed pip first; if it refuses the archive (pip >= 25, see ``FALLBACK_PIP``), fetches the
    ``FALLBACK_PIP`` wheel from the package index and runs that pip from its wheel. Raises RuntimeError with
    pip's output and the offline alternative when both fail.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        args = ["download", "--no-deps", "--no-binary", ":all:", f"bigbench=={BIGBENCH_VERSION}", "-d", tmp]
        cmd = [sys.executable, "-m", "pip", *args]
        proc = _run(cmd)
        fetched = Path(tmp) / SDIST_FILENAME
        if proc.returncode != 0 or not fetched.is_file():
            wheel_dir = Path(tmp) / "pip-wheel"
            get_pip = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            FALLBACK_PIP, "-d", str(wheel_dir)])
            wheels = sorted(wheel_dir.glob("pip-*.whl")) if get_pip.returncode == 0 else []
            if wheels:
                cmd = [sys.executable, str(wheels[0] / "pip"), *args]
                proc = _run(cmd)
        if proc.returncode != 0 or not fetched.is_file():
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
            raise RuntimeError(
                f"downloading the bigbench=={BIGBENCH_VERSION} source archive failed "
                f"(command: {' '.join(cmd)}; exit status {proc.returncode}).\n{tail}\n"
                f"Without network access, download {SDIST_FILENAME} elsewhere and set "
                f"{_ENV_SDIST}=/path/to/{SDIST_FILENAME}, or put it in {downloads}.")
        target = downloads / SDIST_FILENAME
        os.replace(fetched, target)
    return target


def _locate_sdist() -> Path:
    """Path of the bigbench source archive, downloading it with pip as the last resort."""
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
    return _download_sdist(downloads)


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
    is located (``$QAA_BIGBENCH_SDIST``, else ``cache_dir()/downloads``, else ``pip download``) and
    streamed once; the task.json of every supported task not validly cached is extracted in that pass
    (nothing else from the archive is written). Files and the manifest are written atomically
    (temporary file + ``os.replace``) under an inter-process file lock, so concurrent callers are safe.

    Raises:
        ValueError: ``name`` is not a supported task.
        FileNotFoundError: ``$QAA_BIGBENCH_SDIST`` names a missing file.
        RuntimeError: pip could not download the archive, the archive is unreadable, or it lacks the task.
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

@dataclass(frozen=True)
class Example:
    """One task input with all of its references.

    Attributes:
        input: the source text (meaning representation, triples, article or concept list).
        references: the distinct reference outputs for ``input`` (a non-empty tuple of str; a list or
            other sequence given to the constructor is converted to a tuple).
    """

    input: str
    references: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.input, str):
            raise TypeError(f"Example.input must be str, got {type(self.input).__name__}")
        refs = self.references
        if isinstance(refs, str) or not isinstance(refs, Iterable):
            raise TypeError("Example.references must be a sequence of str")
        refs = tuple(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError("Example.references must be a non-empty sequence of str")
        object.__setattr__(self, "references", refs)


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


def _check_cap(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be None or a non-negative int, got {value!r}")
    return value


def _group_by_input(examples: Iterable[Example]) -> dict[str, list[Example]]:
    """Examples grouped by input, inputs in order of first appearance. Raises TypeError for a non-Example."""
    by_input: dict[str, list[Example]] = {}
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"expected Example items, got {type(ex).__name__}")
        by_input.setdefault(ex.input, []).append(ex)
    return by_input


def split_by_input(examples: Sequence[Example], test_fraction: float = 0.2, seed: int = 0,
                   max_train: int | None = None, max_test: int | None = None
                   ) -> tuple[list[Example], list[Example]]:
    """Split examples into train and test sets by unique input.

    The unique inputs (in order of first appearance) are shuffled with ``random.Random(seed)``; the first
    ``round(test_fraction * n_unique)`` of them (at least 1, at most ``n_unique - 1``) form the test set,
    the rest the training set, so no test input occurs in training. ``max_test`` / ``max_train`` then keep
    only the first that many inputs of each side; the test set therefore does not depend on ``max_train``,
    and a smaller ``max_test`` gives a prefix of a larger one. Examples sharing an input stay together.

    Args:
        examples: the examples (normally from :func:`load_task`).
        test_fraction: fraction of unique inputs held out, in (0, 1). Default 0.2.
        seed: shuffling seed (int). Default 0.
        max_train, max_test: optional caps on the number of unique inputs per side.

    Returns:
        ``(train, test)``: lists of :class:`Example`, each in shuffled order.

    Raises:
        ValueError: fewer than 2 unique inputs, ``test_fraction`` outside (0, 1), bad caps or seed.
        TypeError: an item is not an :class:`Example`.
    """
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    max_train = _check_cap(max_train, "max_train")
    max_test = _check_cap(max_test, "max_test")
    by_input = _group_by_input(examples)
    inputs = list(by_input)
    if len(inputs) < 2:
        raise ValueError(f"need at least 2 unique inputs to split, got {len(inputs)}")
    random.Random(seed).shuffle(inputs)
    n_test = min(max(round(test_fraction * len(inputs)), 1), len(inputs) - 1)
    test_inputs, train_inputs = inputs[:n_test], inputs[n_test:]
    if max_test is not None:
        test_inputs = test_inputs[:max_test]
    if max_train is not None:
        train_inputs = train_inputs[:max_train]
    train = [ex for inp in train_inputs for ex in by_input[inp]]
    test = [ex for inp in test_inputs for ex in by_input[inp]]
    return train, test


def split_three(examples: Sequence[Example], split_seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 0.2) -> tuple[list[Example], list[Example], list[Example]]:
    """Split examples into train, validation and test sets by unique input (the comparison's protocol).

    The unique inputs are shuffled with ``random.Random(split_seed)``, exactly as :func:`split_by_input` does;
    the first ``round(test_fraction * n)`` form the test set (the same test set :func:`split_by_input` gives for
    that seed and fraction), the next ``round(val_fraction * n)`` the validation set, carved from what would
    otherwise be training inputs, and the rest the training set. The three are disjoint by input, each keeps at
    least one input, and the split depends on ``split_seed`` alone (training seeds never move it).

    Raises:
        ValueError: fewer than 3 unique inputs, fractions outside (0, 1) or summing to >= 1, a bad seed.
        TypeError: an item is not an :class:`Example`.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ValueError(f"split_seed must be an int, got {split_seed!r}")
    by_input = _group_by_input(examples)
    inputs = list(by_input)
    n = len(inputs)
    if n < 3:
        raise ValueError(f"need at least 3 unique inputs to split three ways, got {n}")
    random.Random(split_seed).shuffle(inputs)
    n_test = min(max(round(test_fraction * n), 1), n - 2)
    n_val = min(max(round(val_fraction * n), 1), n - n_test - 1)
    parts = inputs[:n_test], inputs[n_test:n_test + n_val], inputs[n_test + n_val:]
    test, val, train = ([ex for inp in part for ex in by_input[inp]] for part in parts)
    return train, val, test


def webnlg_triples(text: str) -> frozenset[str]:
    """The set of ``subject | relation | object`` triples of a WebNLG input ``"(s | r | o), (s | r | o)"``
    (whitespace normalised)."""
    body = text.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    return frozenset(" | ".join(p.strip() for p in t.split("|")) for t in body.split("), (") if t.strip())


def seen_inputs(test: Sequence[Example], train: Sequence[Example]) -> list[bool]:
    """For WebNLG: whether each test input's triple set is a subset of some training input's triple set (its
    facts were all seen together in training) - the "seen" / "unseen" breakdown of WebNLG reports."""
    train_sets = [webnlg_triples(e.input) for e in train]
    return [any(webnlg_triples(e.input) <= t for t in train_sets) for e in test]


def training_pairs(examples: Iterable[Example]) -> list[tuple[str, str]]:
    """Flatten examples into ``(input, reference)`` pairs, one per reference, in order.

    Raises:
        TypeError: an item is not an :class:`Example`.
    """
    pairs = []
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"expected Example items, got {type(ex).__name__}")
        pairs.extend((ex.input, ref) for ref in ex.references)
    return pairs


#: Plain-text prompt per task; ``{input}`` is replaced by the example's input.
PROMPT_TEMPLATES: dict[str, str] = {
    "e2e_nlg": "Describe the restaurant in one sentence given these attributes: {input}\nDescription:",
    "webnlg_en": ("Write a short text that states these facts, given as (subject | relation | object) "
                  "triples: {input}\nText:"),
    "xsum": "Summarize the news article in one sentence.\nArticle: {input}\nSummary:",
    "common_gen": "Write one everyday sentence that uses all of these words: {input}\nSentence:",
}


def format_prompt(task: str, input: str) -> str:
    """The plain-text prompt for one input of ``task`` (no chat template).

    The prompt is :data:`PROMPT_TEMPLATES` ``[task]`` with the input substituted; it ends with a label
    and a colon but no trailing space, so a completion (generated or a training target) is expected to
    start with a space, e.g. ``format_prompt(task, x) + " " + reference``.

    Raises:
        ValueError: unknown task.
        TypeError: ``input`` is not a str.
    """
    _check_task(task)
    if not isinstance(input, str):
        raise TypeError(f"input must be str, got {type(input).__name__}")
    return PROMPT_TEMPLATES[task].replace("{input}", input.strip())
