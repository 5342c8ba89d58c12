"""Tests for qaa.experiments.data: archive extraction, cache checksums, grouping, splitting, prompts.

All but the ``slow`` tests use a small fake bigbench archive built in ``tmp_path``; no network is used.
"""
import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import qaa.experiments.data as data
from qaa.experiments.data import (TASKS, Example, cache_dir, ensure_task, format_prompt, load_task, split_by_input,
                      training_pairs)

TOP = "bigbench-1.0.0/bigbench/benchmark_tasks"

FAKE_TASKS = {
    "e2e_nlg": {"name": "e2e_nlg", "examples": [
        {"input": "name: A, food: Thai", "target": "A serves Thai food.", "comment": "0"},
        {"input": "name: B, area: riverside", "target": "B is by the riverside.", "comment": "1"},
        {"input": "name: A, food: Thai", "target": " A is a Thai place. ", "comment": "2"},
        {"input": "name: A, food: Thai", "target": "A serves Thai food.", "comment": "3"},   # duplicate
        {"input": "name: C", "target": "", "comment": "4"},                                # no reference
        {"input": "name: B, area: riverside", "target": "Find B near the river.", "comment": "5"},
    ]},
    "webnlg_en": {"name": "webnlg_en", "examples": [
        {"input": "(X | capital | Y)", "target": ["Y is the capital of X.", "X's capital is Y."]},
        {"input": "(P | birthPlace | Q)", "target": ["P was born in Q."]},
    ]},
    "xsum": {"name": "xsum", "examples": [{"input": "Long article.\nSecond line.", "target": "Summary."}]},
    "common_gen": {"name": "common_gen", "examples": [
        {"input": "dog ball catch", "target": ["The dog catches the ball.", "A dog caught a ball."]}]},
}


def _add(tar, name, payload: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_sdist(path: Path, tasks=FAKE_TASKS, extra=True) -> Path:
    """A bigbench-like source archive with GEM task files (and unrelated members when ``extra``)."""
    with tarfile.open(path, "w:gz") as tar:
        if extra:
            _add(tar, "bigbench-1.0.0/setup.py", b"print('not run')\n")
            _add(tar, f"{TOP}/gem/asset/task.json", json.dumps({"examples": []}).encode())
            _add(tar, f"{TOP}/other_task/task.json", json.dumps({"examples": []}).encode())
        for name, body in tasks.items():
            _add(tar, f"{TOP}/gem/{name}/task.json", json.dumps(body).encode())
    return path


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    archive = make_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    cache = tmp_path / "cache"
    monkeypatch.setenv("QAA_CACHE_DIR", str(cache))
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(archive))
    return archive, cache


def _task_file(cache: Path, name: str) -> Path:
    return cache / "bigbench-1.0.0" / "gem" / name / "task.json"


def _manifest(cache: Path) -> dict:
    return json.loads((cache / "bigbench-1.0.0" / "manifest.json").read_text())["files"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ cache

def test_cache_dir_from_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("QAA_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QAA_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "qaa"


def test_load_task_groups_all_references(fake_env):
    assert load_task("e2e_nlg") == [
        Example("name: A, food: Thai", ("A serves Thai food.", "A is a Thai place.")),
        Example("name: B, area: riverside", ("B is by the riverside.", "Find B near the river.")),
    ]
    assert load_task("webnlg_en") == [
        Example("(X | capital | Y)", ("Y is the capital of X.", "X's capital is Y.")),
        Example("(P | birthPlace | Q)", ("P was born in Q.",)),
    ]
    assert load_task("xsum") == [Example("Long article.\nSecond line.", ("Summary.",))]
    assert load_task("e2e_nlg") == load_task("e2e_nlg")


def test_only_task_files_are_extracted_with_checksums(fake_env):
    _, cache = fake_env
    path = ensure_task("common_gen")
    assert path == _task_file(cache, "common_gen")
    written = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert written == sorted([f"bigbench-1.0.0/gem/{t}/task.json" for t in TASKS]
                             + ["bigbench-1.0.0/manifest.json", "bigbench-1.0.0/.lock"])
    manifest = _manifest(cache)
    assert set(manifest) == {f"gem/{t}/task.json" for t in TASKS}
    for t in TASKS:
        f = _task_file(cache, t)
        assert manifest[f"gem/{t}/task.json"]["sha256"] == _sha(f)
        assert json.loads(f.read_text()) == FAKE_TASKS[t]


def test_cached_task_does_not_need_the_archive(fake_env, monkeypatch, tmp_path):
    ensure_task("e2e_nlg")
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(tmp_path / "gone.tar.gz"))
    assert len(load_task("e2e_nlg")) == 2


def test_checksum_mismatch_triggers_reextraction(fake_env, monkeypatch):
    _, cache = fake_env
    f = ensure_task("e2e_nlg")
    good = f.read_bytes()
    tampered = json.loads(good)
    tampered["examples"][0]["target"] = "Tampered."
    f.write_text(json.dumps(tampered))
    calls = []
    real_extract = data._extract
    monkeypatch.setattr(data, "_extract", lambda *a: calls.append(a[1]) or real_extract(*a))
    examples = load_task("e2e_nlg")
    assert calls == [["e2e_nlg"]]                 # only the damaged file is extracted again
    assert f.read_bytes() == good
    assert examples[0].references == ("A serves Thai food.", "A is a Thai place.")
    assert _manifest(cache)["gem/e2e_nlg/task.json"]["sha256"] == _sha(f)


def test_missing_file_or_broken_manifest_is_repaired(fake_env):
    _, cache = fake_env
    ensure_task("xsum")
    _task_file(cache, "webnlg_en").unlink()
    assert len(load_task("webnlg_en")) == 2
    (cache / "bigbench-1.0.0" / "manifest.json").write_text("{not json")
    assert len(load_task("xsum")) == 1
    assert _manifest(cache)["gem/xsum/task.json"]["sha256"] == _sha(_task_file(cache, "xsum"))


def test_concurrent_callers_extract_once(fake_env, monkeypatch):
    _, cache = fake_env
    calls = []
    lock = threading.Lock()
    real_extract = data._extract

    def counting(*args):
        with lock:
            calls.append(list(args[1]))
        return real_extract(*args)

    monkeypatch.setattr(data, "_extract", counting)
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(ensure_task, TASKS * 2))
    assert len(calls) == 1 and sorted(calls[0]) == sorted(TASKS)
    manifest = _manifest(cache)
    for t, p in zip(TASKS * 2, paths):
        assert p == _task_file(cache, t) and manifest[f"gem/{t}/task.json"]["sha256"] == _sha(p)
    assert not list(cache.rglob("*.tmp"))


def test_unknown_task_and_bad_archives(fake_env, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        ensure_task("squad")
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(FileNotFoundError, match="QAA_BIGBENCH_SDIST"):
        ensure_task("e2e_nlg")
    not_tar = tmp_path / "not.tar.gz"
    not_tar.write_bytes(b"this is not an archive")
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(not_tar))
    with pytest.raises(RuntimeError, match="could not read"):
        ensure_task("e2e_nlg")
    partial = make_sdist(tmp_path / "partial.tar.gz", tasks={"xsum": FAKE_TASKS["xsum"]})
    monkeypatch.setenv("QAA_BIGBENCH_SDIST", str(partial))
    with pytest.raises(RuntimeError, match="no member"):
        ensure_task("e2e_nlg")


def test_pip_download_fallback_and_reuse(fake_env, monkeypatch):
    archive, cache = fake_env
    monkeypatch.delenv("QAA_BIGBENCH_SDIST")
    commands = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        shutil.copy(archive, Path(cmd[cmd.index("-d") + 1]) / "bigbench-1.0.0.tar.gz")
        return Done()

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    assert len(load_task("e2e_nlg")) == 2
    assert len(commands) == 1
    cmd = commands[0]
    assert cmd[1:7] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    assert "bigbench==1.0.0" in cmd
    assert (cache / "downloads" / "bigbench-1.0.0.tar.gz").read_bytes() == archive.read_bytes()
    shutil.rmtree(cache / "bigbench-1.0.0")
    assert len(load_task("webnlg_en")) == 2       # extracted again from the downloaded archive
    assert len(commands) == 1


def test_new_pip_refusal_falls_back_to_pip_wheel(fake_env, monkeypatch):
    """pip >= 25 refuses the bigbench sdist (direct-URL metadata): the loader then runs FALLBACK_PIP from its
    wheel, which fetches the archive."""
    archive, cache = fake_env
    monkeypatch.delenv("QAA_BIGBENCH_SDIST")
    commands = []

    class Result:
        def __init__(self, rc, err=""):
            self.returncode, self.stdout, self.stderr = rc, "", err

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        if cmd[1:3] == ["-m", "pip"] and "bigbench==1.0.0" in cmd:
            return Result(1, "ERROR: Distributions from PyPI cannot declare direct URL dependencies.")
        if data.FALLBACK_PIP in cmd:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "pip-24.0-py3-none-any.whl").write_bytes(b"wheel")
            return Result(0)
        assert cmd[1].endswith("pip-24.0-py3-none-any.whl/pip") and "bigbench==1.0.0" in cmd
        shutil.copy(archive, dest / "bigbench-1.0.0.tar.gz")
        return Result(0)

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    assert len(load_task("e2e_nlg")) == 2
    assert len(commands) == 3
    assert (cache / "downloads" / "bigbench-1.0.0.tar.gz").read_bytes() == archive.read_bytes()


def test_pip_failure_is_reported(fake_env, monkeypatch):
    monkeypatch.delenv("QAA_BIGBENCH_SDIST")

    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: Could not find a version that satisfies the requirement"

    monkeypatch.setattr(data.subprocess, "run", lambda cmd, **kw: Failed())
    with pytest.raises(RuntimeError, match="QAA_BIGBENCH_SDIST") as err:
        ensure_task("e2e_nlg")
    assert "Could not find a version" in str(err.value)


# ------------------------------------------------------------------------------------------------ examples

def test_example_is_frozen_and_validated():
    ex = Example("x", ["a", "b"])
    assert ex.references == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.input = "y"
    with pytest.raises(ValueError):
        Example("x", ())
    with pytest.raises(TypeError):
        Example("x", "a single string")
    with pytest.raises(TypeError):
        Example(3, ("a",))


def _examples(n, refs=2):
    return [Example(f"input {i}", tuple(f"ref {i}.{j}" for j in range(refs))) for i in range(n)]


def test_split_by_input_has_no_overlap_and_is_deterministic():
    examples = _examples(50)
    train, test = split_by_input(examples, test_fraction=0.2, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert not {e.input for e in train} & {e.input for e in test}
    assert sorted(train + test, key=lambda e: e.input) == sorted(examples, key=lambda e: e.input)
    assert split_by_input(examples, test_fraction=0.2, seed=3) == (train, test)
    assert split_by_input(list(examples), 0.2, 4)[1] != test


def test_split_keeps_repeated_inputs_together():
    examples = _examples(20) + [Example("input 3", ("another",)), Example("input 7", ("more",))]
    for seed in range(5):
        train, test = split_by_input(examples, 0.25, seed)
        train_inputs = {e.input for e in train}
        assert not train_inputs & {e.input for e in test}
        assert len(train) + len(test) == len(examples)
        assert len({e.input for e in test}) == 5


def test_split_caps():
    examples = _examples(100)
    full_train, full_test = split_by_input(examples, 0.3, seed=1)
    train, test = split_by_input(examples, 0.3, seed=1, max_train=7, max_test=4)
    assert train == full_train[:7] and test == full_test[:4]
    assert split_by_input(examples, 0.3, seed=1, max_train=2)[1] == full_test
    assert split_by_input(examples, 0.3, seed=1, max_test=0)[1] == []


@pytest.mark.parametrize("kwargs", [dict(test_fraction=0.0), dict(test_fraction=1.0), dict(test_fraction=-1),
                                    dict(max_train=-1), dict(max_test=1.5), dict(seed="a")])
def test_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        split_by_input(_examples(10), **kwargs)


def test_split_needs_two_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        split_by_input(_examples(1))
    with pytest.raises(TypeError):
        split_by_input([("a", "b"), ("c", "d")])


def test_training_pairs_one_per_reference():
    examples = [Example("a", ("1", "2", "3")), Example("b", ("4",))]
    assert training_pairs(examples) == [("a", "1"), ("a", "2"), ("a", "3"), ("b", "4")]
    assert training_pairs([]) == []


def test_format_prompt():
    assert format_prompt("e2e_nlg", "name: A, food: Thai") == (
        "Describe the restaurant in one sentence given these attributes: name: A, food: Thai\nDescription:")
    for task in TASKS:
        prompt = format_prompt(task, "  {braces} and text ")
        assert "{braces} and text" in prompt and prompt.endswith(":") and not prompt.endswith(" ")
    with pytest.raises(ValueError, match="unknown task"):
        format_prompt("dart", "x")
    with pytest.raises(TypeError):
        format_prompt("xsum", None)


# ------------------------------------------------------------------------------------------------ real data

@pytest.mark.slow
def test_real_gem_tasks():
    """The real bigbench 1.0.0 archive ($QAA_BIGBENCH_SDIST, the cache, or pip download)."""
    e2e = load_task("e2e_nlg")
    raw = json.loads(ensure_task("e2e_nlg").read_text())["examples"]
    assert len(raw) == 1000 and len(e2e) == 213
    assert _sha(ensure_task("e2e_nlg")) == "9e80fbbf1bca5d4c8cdc6d264c0137efda5bcd2ecb2f5a47ea6552cc93531329"
    assert sum(len(e.references) for e in e2e) == len({(r["input"], r["target"]) for r in raw})
    web = load_task("webnlg_en")
    assert len(web) == 1001 and sum(len(e.references) for e in web) == 2907
    assert len(load_task("xsum")) == 1001 and len(load_task("common_gen")) == 499
    train, test = split_by_input(e2e, 0.2, seed=0)
    assert len(test) == round(0.2 * 213) and not {e.input for e in train} & {e.input for e in test}
