"""The comparison's results file, owned here alone: its name and version, the record keys, the store several
processes fill under a file lock, which settings may differ on resumption, and ``losses.csv``. :mod:`.compare`
writes through it and :mod:`.report` reads through it; neither knows the key format.

``results.json`` holds ``{"version", "settings", "machine", "versions", "model_label", "qaa_defaults",
"started", "tasks": {task: data description}, "runs": {run key: training record}, "evals": {run key: test
record}, "selection": {selection key: chosen rate and the grid}}``; a run key is
``task|method|lr=..|ratio=..|seed=..`` (``task|base`` for the untuned model), a selection key ``task|method``.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import List, Optional, Tuple

from filelock import FileLock

from ..tuners.save_load import atomic_write_text
from .registry import BASE

__all__ = ["RESULTS_FILE", "RESULTS_VERSION", "run_key", "selection_key", "split_key", "rate_origin", "Store",
           "write_losses", "incompatible_settings"]

RESULTS_FILE = "results.json"
#: Version of the results.json layout (a folder holding another version is not resumed).
RESULTS_VERSION = 2
#: Settings that do not change what a record means: they may differ between a run and its resumption. Given
#: rates and angle-rate ratios (``--lr``, ``--lr-from``) are in every run's key and its selection record.
_RESUMABLE_DIFFERENCES = {"tasks", "methods", "progress", "threads", "out", "bertscore", "lr", "lr_from",
                          "theta_lr_ratio",
                          "preset", "full", "max_widen", "eval_size_given", "lr_given_by", "lr_chosen_on"}
#: Settings added after folders were filled: a folder without one had the value given here (a cpu_long folder
#: centred on one file is not resumed without it or with another, which would sweep other grids into it).
_ADDED_DEFAULTS = {"lr_centre": {}, "lr_centre_ratio": {}, "lr_grid_from": None, "lr_centre_how": {}}


def run_key(task: str, method: str, lr: Optional[float] = None, ratio: Optional[float] = None,
            seed: Optional[int] = None) -> str:
    """The key of a training run or evaluation in results.json (``task|method`` for the base row)."""
    if method == BASE:
        return f"{task}|{BASE}"
    return f"{task}|{method}|lr={lr:.6g}|ratio={ratio:.6g}|seed={seed}"


def selection_key(task: str, method: str) -> str:
    """The key of a method's rate selection on a task in results.json."""
    return f"{task}|{method}"


def split_key(key: str) -> Tuple[str, str]:
    """``(task, method)`` of a selection key or a run key (``task|base`` gives ``(task, "base")``)."""
    task, _, rest = key.partition("|")
    return task, rest.split("|", 1)[0]



def _same_rate(a: dict, b: dict) -> bool:
    return a.get("lr") == b.get("lr") and a.get("theta_lr_ratio", 1.0) == b.get("theta_lr_ratio", 1.0)


def rate_origin(selection: dict, task: str, method: str) -> List[str]:
    """The tasks whose validation split chose the rate of selection record ``task|method`` of ``selection`` (a
    results file's ``"selection"``), sorted; ``[]`` when none is known (a rate typed with ``--lr``).

    A swept record was chosen on its own task. A given record (``--lr-from``) names in ``chosen_on`` the tasks of
    the file it came from; each such task that has a record with the same rate in ``selection`` is followed (a
    rate carried from task to task within one folder): a swept one is an origin, a given one is followed in turn.
    A named task without such a record is taken as recorded (chosen in the other file). A record naming its own
    task was read back from its own folder on a resumption; its origin is the tasks of ``selection`` whose sweep
    chose the same rate, or its own task as recorded where none did.
    """
    start = selection.get(selection_key(task, method))
    if not isinstance(start, dict) or start.get("status") != "ok":
        return []
    if start.get("swept"):
        return [task]
    found, seen, stack, self_named = set(), {task}, list(start.get("chosen_on") or []), False
    while stack:
        t = stack.pop()
        if t == task:
            self_named = True
            continue
        if t in seen:
            continue
        seen.add(t)
        sel = selection.get(selection_key(t, method))
        if not isinstance(sel, dict) or sel.get("status") != "ok" or not _same_rate(sel, start):
            found.add(t)
        elif sel.get("swept"):
            found.add(t)
        else:
            stack.extend(sel.get("chosen_on") or [])
    if self_named and not found:
        found.update(split_key(k)[0] for k, sel in selection.items()
                     if split_key(k)[1] == method and isinstance(sel, dict) and sel.get("status") == "ok"
                     and sel.get("swept") and _same_rate(sel, start))
        found = found or {task}
    return sorted(found)


#: Per-task settings: two processes filling one folder with different tasks compare only their common tasks.
_PER_TASK = ("eval_size", "val_size", "max_new_tokens", "max_length")
#: Per-method settings: two processes filling one folder with different methods (one method per process, as
#: the longer budget runs) compare only the methods both run; a method in both must have the same value.
_PER_METHOD = ("lr_centre", "lr_centre_ratio", "lr_centre_how")


def _method_set(settings: dict) -> Optional[set]:
    methods = settings.get("methods")
    if not isinstance(methods, dict):
        return None
    return {m for ms in methods.values() for m in ms}


def incompatible_settings(old: dict, new: dict) -> List[str]:
    """Names of the settings whose values make records of ``old`` and ``new`` mean different things."""
    keys = (set(old) | set(new)) - _RESUMABLE_DIFFERENCES
    out = []
    for k in sorted(keys):
        a, b = old.get(k, _ADDED_DEFAULTS.get(k)), new.get(k, _ADDED_DEFAULTS.get(k))
        if k in _PER_TASK and isinstance(a, dict) and isinstance(b, dict):
            if any(a[t] != b[t] for t in set(a) & set(b)):
                out.append(k)
        elif k in _PER_METHOD and isinstance(a, dict) and isinstance(b, dict):
            ran_old, ran_new = _method_set(old), _method_set(new)
            common = ran_old & ran_new if ran_old is not None and ran_new is not None else set(a) | set(b)
            if any(a.get(m) != b.get(m) for m in common):
                out.append(k)
        elif a != b:
            out.append(k)
    return out


class Store:
    """``<out>/results.json``: records keyed by :func:`run_key`, merged under a file lock on every write so that
    several processes (e.g. one per task) can fill one folder."""

    def __init__(self, out: Path, settings, header: dict):
        self.out = out
        self.path = out / RESULTS_FILE
        self.lock = FileLock(str(out / ".results.lock"))
        self.settings = settings
        with self.lock:
            existing = self._read()
            if existing is not None:
                self._check_compatible(existing)
                self.data = existing
            else:
                self.data = {"version": RESULTS_VERSION, "settings": settings.to_dict(), **header, "tasks": {},
                             "runs": {}, "evals": {}, "selection": {}}
                self._write(self.data)

    def _read(self) -> Optional[dict]:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"--out {self.out}: {RESULTS_FILE} cannot be read ({e}); choose another --out") from e
        if not isinstance(data, dict) or data.get("version") != RESULTS_VERSION:
            raise ValueError(f"--out {self.out} holds results of another qaa version or command (results.json "
                             f"version {data.get('version') if isinstance(data, dict) else None!r}, expected "
                             f"{RESULTS_VERSION}); choose another --out")
        return data

    def _check_compatible(self, existing: dict) -> None:
        old, new = existing.get("settings", {}), self.settings.to_dict()
        differing = incompatible_settings(old, new)
        if differing:
            detail = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in differing[:4])
            raise ValueError(f"--out {self.out} holds results of an incompatible comparison ({detail}); resume "
                             "with the same settings or choose another --out")

    def _write(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, indent=1, default=_json_default) + "\n")

    def update(self, section: str, key: str, record: dict) -> None:
        """Store one record (re-reading the file first, so records of other processes are kept)."""
        with self.lock:
            data = self._read() or self.data
            data.setdefault(section, {})[key] = record
            for k in ("tasks", "selection"):
                data.setdefault(k, {}).update({t: v for t, v in self.data.get(k, {}).items() if t not in data[k]})
            self.data = data
            self._write(data)

    def set_meta(self, section: str, key: str, value) -> None:
        self.update(section, key, value)

    def finished(self, section: str, key: str) -> Optional[dict]:
        rec = self.data.get(section, {}).get(key)
        return rec if isinstance(rec, dict) and rec.get("status") == "ok" else None


def _json_default(obj):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_losses(results: dict, out: Path) -> None:
    """``losses.csv``: every training run's loss per step (task, method, lr, ratio, seed, step, loss, seconds)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "method", "lr", "theta_lr_ratio", "seed", "step", "loss", "step_seconds"])
    for r in results.get("runs", {}).values():
        for i, (loss, sec) in enumerate(zip(r.get("losses", []), r.get("step_seconds", []))):
            w.writerow([r["task"], r["method"], f"{r['lr']:.6g}", f"{r['theta_lr_ratio']:.6g}", r["seed"], i,
                        f"{loss:.6f}", f"{sec:.4f}"])
    atomic_write_text(out / "losses.csv", buf.getvalue())
