"""The task registry: a task is one :class:`Task` entry (name, data, how it is split, prompt, semantic check,
licence), and ``qaa finetune --task``, ``qaa compare --tasks``, the presets and the report all read it.

Tasks on the vendored releases (:mod:`.sources`; no download, checksummed):

* ``e2e``: E2E NLG Challenge. Training and validation inputs are split by MR from the **development set**
  (547 MRs); the test inputs are the **official test set** (630 MRs, every reference kept). The official
  training set (42k references) is not vendored: a user who has it passes ``data_dir`` (``--data``) holding
  ``trainset.csv``, ``devset.csv`` and ``testset_w_refs.csv``, and then trains on the training set, validates on
  the development set and tests on the test set, the literature's protocol.
* ``webnlg``: WebNLG 2017 development set (872 triple sets, 10 DBpedia categories), split three ways by triple
  set. Licence CC BY-NC-SA 4.0: non-commercial use only.
* ``webnlg_unseen``: the same file split by **category**: ``split_seed`` picks 3 categories held out of training
  (redrawn until they hold at least 150 triple sets); the other 7 are split three ways by triple set. The test
  inputs are the seen categories' test split followed by every held-out category's triple set, with
  ``test_groups["unseen"]`` marking which is which, so seen and unseen can be compared on one run. This is the
  project's own category hold-out, not WebNLG's official unseen test split.
* ``dart``: the 421 open-domain triple sets of the DART v1.1.1 development set (sources WikiSQL and
  WikiTableQuestions; its other 2,347 sets are copies of E2E and WebNLG inputs), split three ways by triple set.
* ``jsonl``: a user's own data-to-text task in JSONL (``{"input": ..., "references": [...]}`` per line), given
  as ``data_dir``: a ``.jsonl`` file split three ways by input, or a folder with ``train.jsonl`` and
  ``test.jsonl`` (and optionally ``validation.jsonl``; else validation is carved from training).

GEM tasks from the optional BIG-bench archive (:mod:`.bigbench`: never downloaded, only read where a user has
the archive): ``e2e_nlg``, ``webnlg_en``, ``xsum``, ``common_gen``, each split three ways by input.

The test inputs a run scores are the test split in a seeded order (``random.Random(split_seed)``), so a cap
(``eval_size``) keeps a recorded, reproducible subset with every reference of each input.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import bigbench
from .data import Example, split_three, split_two
from .sources import (DART_OPEN_DOMAIN_SOURCES, DataError, read_dart_json, read_e2e_csv, read_file, read_jsonl,
                      read_webnlg_json)

__all__ = ["Task", "TaskSplits", "TASKS", "names", "get", "register", "load_splits", "format_prompt",
           "DataError", "WEBNLG_UNSEEN_CATEGORIES", "WEBNLG_UNSEEN_MIN_TEST"]

#: Categories ``webnlg_unseen`` holds out of training, and the fewest triple sets they must hold.
WEBNLG_UNSEEN_CATEGORIES = 3
WEBNLG_UNSEEN_MIN_TEST = 150


@dataclasses.dataclass
class TaskSplits:
    """A task's three splits by unique input, and what produced them.

    Attributes:
        train, val, test: lists of :class:`~qaa.experiments.data.Example`, disjoint by input; ``test`` in the
            seeded order (a prefix is a reproducible subset).
        test_groups: named boolean masks over ``test`` (e.g. ``{"unseen": [...]}``), or empty.
        info: provenance stored with results: the data files with their SHA-256 and source, the split rule,
            held-out categories, and so on.
    """

    train: List[Example]
    val: List[Example]
    test: List[Example]
    test_groups: Dict[str, List[bool]] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    def capped(self, eval_size: Optional[int] = None, val_size: Optional[int] = None,
               train_size: Optional[int] = None) -> "TaskSplits":
        """The splits with at most ``eval_size`` test, ``val_size`` validation and ``train_size`` training inputs
        (their first ones; a training input keeps every example of it). ``None`` keeps a split whole. Where the test inputs form groups (``test_groups``, one mask), the cap
        applies to each side of the mask, so both stay represented (``webnlg_unseen``: up to ``eval_size``
        seen-category and ``eval_size`` held-out-category inputs)."""
        test, groups = self.test, dict(self.test_groups)
        if eval_size is not None:
            if len(groups) == 1:
                (key, mask), = groups.items()
                keep, counts = [], {True: 0, False: 0}
                for flag in mask:
                    keep.append(counts[bool(flag)] < eval_size)
                    counts[bool(flag)] += 1
                test = [e for e, k in zip(test, keep) if k]
                groups = {key: [m for m, k in zip(mask, keep) if k]}
            else:
                test = test[:eval_size]
                groups = {k: v[:len(test)] for k, v in groups.items()}
        val = self.val if val_size is None else self.val[:val_size]
        train = self.train
        if train_size is not None:
            kept = set(list(dict.fromkeys(e.input for e in self.train))[:train_size])
            train = [e for e in self.train if e.input in kept]
        return TaskSplits(train, val, test, groups, dict(self.info))


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of the registry.

    Attributes:
        name: the ``--task`` name.
        description: one line for ``--help`` and reports.
        prompt: the plain-text prompt template; ``{input}`` is replaced by the input (see :func:`format_prompt`).
        build: ``build(split_seed, val_fraction, test_fraction, data_dir) -> TaskSplits``.
        semantic: the semantic-fidelity check of its outputs: ``"slots"`` (E2E slot error rate),
            ``"entities"`` (entity coverage of triples) or ``None``.
        licence: the data's licence, shown to the user.
        data_layout: what a ``--data`` folder must hold (for messages); ``""`` if ``--data`` does not apply.
        needs_data: ``--data`` is required (the ``jsonl`` task).
    """

    name: str
    description: str
    prompt: str
    build: Callable[..., TaskSplits]
    semantic: Optional[str] = None
    licence: str = ""
    data_layout: str = ""
    needs_data: bool = False


def _test_order(test: Sequence[Example], seed: int) -> List[Example]:
    out = list(test)
    random.Random(seed).shuffle(out)
    return out


def _files(*records) -> list:
    return [dict(r) for r in records]


# ---------------------------------------------------------------------------------------------- builders

def _build_e2e(split_seed: int, val_fraction: float, test_fraction: float, data_dir=None) -> TaskSplits:
    del test_fraction  # the official test set is the test split
    dev_blob, dev_info = read_file("e2e/devset.csv", data_dir)
    dev = read_e2e_csv(dev_blob, dev_info["file"])
    test_blob, test_info = read_file("e2e/testset_w_refs.csv", data_dir)
    test = read_e2e_csv(test_blob, test_info["file"])
    files = [dev_info, test_info]
    full_train = data_dir is not None and any((Path(data_dir) / n).is_file()
                                              for n in ("trainset.csv", "trainset.csv.xz"))
    if full_train:
        train_blob, train_info = read_file("e2e/trainset.csv", data_dir)
        train, val = read_e2e_csv(train_blob, train_info["file"]), dev
        files.insert(0, train_info)
        rule = "train: the official training set; validation: the development set; test: the official test set"
    else:
        train, val = split_two(dev, seed=split_seed, fraction=val_fraction)
        rule = ("train and validation: the development set split by MR (split seed, validation fraction); "
                "test: the official test set")
    overlap = {e.input for e in test} & {e.input for e in train + val}
    if overlap:
        raise DataError(f"e2e: {len(overlap)} test MR(s) also occur in the training or validation file")
    return TaskSplits(train, val, _test_order(test, split_seed), {}, {"files": _files(*files), "split": rule})


def _build_pool(load: Callable[[Optional[str]], Tuple[List[Example], list]], rule: str):
    """A builder that splits one pool of examples three ways by input (:func:`split_three`)."""
    def build(split_seed: int, val_fraction: float, test_fraction: float, data_dir=None) -> TaskSplits:
        examples, files = load(data_dir)
        train, val, test = split_three(examples, split_seed, val_fraction, test_fraction)
        return TaskSplits(train, val, test, {}, {"files": _files(*files), "split": rule})
    return build


def _load_webnlg(data_dir):
    blob, info = read_file("webnlg2017/dev.json", data_dir)
    examples, _ = read_webnlg_json(blob, info["file"])
    return examples, [info]


def _load_dart(data_dir):
    blob, info = read_file("dart/dart-v1.1.1-full-dev.json", data_dir)
    examples, _ = read_dart_json(blob, info["file"], DART_OPEN_DOMAIN_SOURCES)
    return examples, [info]


def _build_webnlg_unseen(split_seed: int, val_fraction: float, test_fraction: float, data_dir=None) -> TaskSplits:
    blob, info = read_file("webnlg2017/dev.json", data_dir)
    examples, category = read_webnlg_json(blob, info["file"])
    sizes: Dict[str, int] = {}
    for e in examples:
        for c in category[e.input]:
            sizes[c] = sizes.get(c, 0) + 1
    cats = sorted(sizes)
    k = WEBNLG_UNSEEN_CATEGORIES
    if len(cats) < k + 1 or sum(sorted(sizes.values())[-k:]) < WEBNLG_UNSEEN_MIN_TEST:
        raise DataError(f"webnlg_unseen: {info['file']} has {len(cats)} categories ({sizes}); holding out {k} of "
                        f"them with at least {WEBNLG_UNSEEN_MIN_TEST} triple sets needs more data")
    rng = random.Random(split_seed)
    for _ in range(10_000):
        held = sorted(rng.sample(cats, k))
        if sum(sizes[c] for c in held) >= WEBNLG_UNSEEN_MIN_TEST:
            break
    else:  # pragma: no cover - the check above guarantees some draw qualifies
        raise DataError("webnlg_unseen: no draw of held-out categories reached the minimum size")
    # a triple set listed under a held-out category is unseen even if another category lists it too, so no
    # held-out triple set is ever trained on
    is_held = {e.input: bool(set(category[e.input]) & set(held)) for e in examples}
    seen = [e for e in examples if not is_held[e.input]]
    unseen = _test_order([e for e in examples if is_held[e.input]], split_seed)
    if sum(1 for e in examples if is_held[e.input]) < WEBNLG_UNSEEN_MIN_TEST:  # pragma: no cover - checked above
        raise DataError("webnlg_unseen: the held-out categories hold too few triple sets")
    try:
        train, val, test_seen = split_three(seen, split_seed, val_fraction, test_fraction)
    except ValueError as e:
        raise DataError(f"webnlg_unseen: the seen categories cannot be split ({e})") from None
    test = test_seen + unseen
    groups = {"unseen": [False] * len(test_seen) + [True] * len(unseen)}
    return TaskSplits(train, val, test, groups, {
        "files": _files(info), "held_out_categories": held, "seen_categories": [c for c in cats if c not in held],
        "test_seen_inputs": len(test_seen), "test_unseen_inputs": len(unseen),
        "split": (f"{k} categories held out of training by the split seed (>= {WEBNLG_UNSEEN_MIN_TEST} triple "
                  "sets); the other categories split three ways by triple set; test: their test split, then every "
                  "held-out triple set")})


def _build_jsonl(split_seed: int, val_fraction: float, test_fraction: float, data_dir=None) -> TaskSplits:
    if data_dir is None:
        raise DataError("task jsonl needs --data: a .jsonl file, or a folder with train.jsonl and test.jsonl "
                        "(and optionally validation.jsonl)")
    path = Path(data_dir).expanduser()
    if path.is_file():
        blob, info = read_file(path.name, path.parent)
        train, val, test = split_three(read_jsonl(blob, str(path)), split_seed, val_fraction, test_fraction)
        return TaskSplits(train, val, test, {}, {"files": _files(info), "split": "one file split three ways by input"})
    parts, files = {}, []
    for part in ("train", "validation", "test"):
        if part == "validation" and not any((path / f"validation.jsonl{x}").is_file() for x in ("", ".xz")):
            continue
        blob, info = read_file(f"{part}.jsonl", path)
        parts[part] = read_jsonl(blob, info["file"])
        files.append(info)
    train = parts["train"]
    if "validation" in parts:
        val = parts["validation"]
        rule = "train.jsonl / validation.jsonl / test.jsonl as given"
    else:
        train, val = split_two(train, seed=split_seed, fraction=val_fraction)
        rule = "validation carved from train.jsonl by input (split seed); test.jsonl as given"
    held = {e.input for e in parts["test"]}
    if held & {e.input for e in train + val}:
        raise DataError(f"--data {path}: some test inputs also occur in train/validation")
    return TaskSplits(train, val, _test_order(parts["test"], split_seed), {}, {"files": _files(*files),
                                                                               "split": rule})


def _load_gem(name: str):
    def load(data_dir):
        if data_dir is not None:
            raise DataError(f"task {name} reads the BIG-bench archive ($QAA_BIGBENCH_SDIST), not --data")
        examples = bigbench.load_task(name)
        return examples, [{"file": f"bigbench-{bigbench.BIGBENCH_VERSION}/gem/{name}/task.json",
                           "source": "bigbench archive"}]
    return load


# ---------------------------------------------------------------------------------------------- registry

_E2E_PROMPT = "Describe the restaurant in one sentence given these attributes: {input}\nDescription:"
_TRIPLES_PROMPT = ("Write a short text that states these facts, given as (subject | relation | object) triples: "
                   "{input}\nText:")
_POOL_RULE = "one pool split three ways by input (split seed, validation and test fractions)"

TASKS: Dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry (replacing one of the same name) and return it.

    Raises:
        TypeError: ``task`` is not a :class:`Task`.
        ValueError: its prompt has no ``{input}``, or its semantic check is unknown.
    """
    if not isinstance(task, Task):
        raise TypeError(f"expected a Task, got {type(task).__name__}")
    if "{input}" not in task.prompt:
        raise ValueError(f"task {task.name}: the prompt template must contain {{input}}")
    if task.semantic not in (None, "slots", "entities"):
        raise ValueError(f"task {task.name}: semantic must be None, 'slots' or 'entities', got {task.semantic!r}")
    TASKS[task.name] = task
    return task


for _task in (
    Task("e2e", "E2E NLG Challenge: restaurant MRs (development set for training and validation, official test "
                "set for testing)", _E2E_PROMPT, _build_e2e, "slots", "CC BY-SA 4.0",
         "devset.csv and testset_w_refs.csv (optionally trainset.csv), columns mr,ref"),
    Task("webnlg", "WebNLG 2017 development set: DBpedia triples, split by triple set", _TRIPLES_PROMPT,
         _build_pool(_load_webnlg, _POOL_RULE), "entities", "CC BY-NC-SA 4.0 (non-commercial use only)",
         "dev.json in WebNLG 2017's JSON layout"),
    Task("webnlg_unseen", "WebNLG 2017: 3 categories held out of training (seen and unseen test inputs)",
         _TRIPLES_PROMPT, _build_webnlg_unseen, "entities", "CC BY-NC-SA 4.0 (non-commercial use only)",
         "dev.json in WebNLG 2017's JSON layout"),
    Task("dart", "DART v1.1.1: the 421 open-domain (WikiSQL, WikiTableQuestions) triple sets of its development set",
         _TRIPLES_PROMPT, _build_pool(_load_dart, _POOL_RULE), "entities", "MIT",
         "dart-v1.1.1-full-dev.json in DART's JSON layout"),
    Task("jsonl", "your own data-to-text task: JSONL {\"input\": ..., \"references\": [...]} per line",
         "Input: {input}\nOutput:", _build_jsonl, None, "yours",
         "a .jsonl file, or a folder with train.jsonl and test.jsonl (optionally validation.jsonl)", True),
    Task("e2e_nlg", "GEM E2E from the BIG-bench 1.0.0 archive (needs $QAA_BIGBENCH_SDIST)", _E2E_PROMPT,
         _build_pool(_load_gem("e2e_nlg"), _POOL_RULE), "slots", "CC BY-SA 4.0"),
    Task("webnlg_en", "GEM WebNLG from the BIG-bench 1.0.0 archive (needs $QAA_BIGBENCH_SDIST)", _TRIPLES_PROMPT,
         _build_pool(_load_gem("webnlg_en"), _POOL_RULE), "entities", "CC BY-NC-SA 4.0"),
    Task("xsum", "GEM XSum from the BIG-bench 1.0.0 archive (needs $QAA_BIGBENCH_SDIST)",
         "Summarize the news article in one sentence.\nArticle: {input}\nSummary:",
         _build_pool(_load_gem("xsum"), _POOL_RULE)),
    Task("common_gen", "GEM CommonGen from the BIG-bench 1.0.0 archive (needs $QAA_BIGBENCH_SDIST)",
         "Write one everyday sentence that uses all of these words: {input}\nSentence:",
         _build_pool(_load_gem("common_gen"), _POOL_RULE)),
):
    register(_task)
del _task


def names() -> Tuple[str, ...]:
    """The registered task names, in registration order."""
    return tuple(TASKS)


def get(name: str) -> Task:
    """The registered task ``name``. Raises ValueError listing the known tasks for an unknown name."""
    task = TASKS.get(name) if isinstance(name, str) else None
    if task is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return task


def _fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def load_splits(name: str, split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                data_dir: Optional[str | Path] = None) -> TaskSplits:
    """Load task ``name`` and split it (see the module docstring for each task's rule).

    Args:
        name: a registered task. split_seed: seed of the split (and of the test inputs' order).
        val_fraction, test_fraction: shares of unique inputs held out (``test_fraction`` is unused where the
            test set is fixed: ``e2e``, ``jsonl`` with a test file).
        data_dir: a user's copy of the task's files (``--data``); ``None`` reads the vendored releases.

    Returns:
        :class:`TaskSplits`; ``info`` also records the task name, split seed and fractions.

    Raises:
        ValueError: unknown task, bad fractions or seed. DataError (a ValueError): a missing, corrupted or
        malformed data file (named), or a split that would be empty. FileNotFoundError: a GEM task without the
        BIG-bench archive.
    """
    task = get(name)
    val_fraction = _fraction("val_fraction (--val-fraction)", val_fraction)
    test_fraction = _fraction("test_fraction (--test-fraction)", test_fraction)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or not 0 <= split_seed < 2**63:
        raise ValueError(f"split_seed (--split-seed) must be an integer in [0, 2**63), got {split_seed!r}")
    if task.needs_data and data_dir is None:
        raise DataError(f"task {name} needs --data: {task.data_layout}")
    if data_dir is not None and not task.data_layout:
        raise DataError(f"task {name} does not read --data")
    try:
        splits = task.build(split_seed, val_fraction, test_fraction, data_dir)
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"task {name}: {e}") from None
    for part in ("train", "val", "test"):
        if not getattr(splits, part):
            raise DataError(f"task {name}: the {part} split is empty")
    splits.info.update({"task": name, "split_seed": split_seed, "val_fraction": val_fraction,
                        "test_fraction": test_fraction, "licence": task.licence})
    return splits


def format_prompt(task: str, input: str) -> str:
    """The plain-text prompt for one input of ``task`` (no chat template).

    The task's template with the input substituted; it ends with a label and a colon but no trailing space, so
    a completion (generated or a training target) is expected to start with a space, e.g.
    ``format_prompt(task, x) + " " + reference``.

    Raises:
        ValueError: unknown task. TypeError: ``input`` is not a str.
    """
    template = get(task).prompt
    if not isinstance(input, str):
        raise TypeError(f"input must be str, got {type(input).__name__}")
    return template.replace("{input}", input.strip())
