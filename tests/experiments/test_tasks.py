"""The task registry on the real vendored releases (no fake data): sizes, checksums, splits, prompts, bad input.

The expected counts are the releases' own (shared data README: E2E development set 4,672 references over 547
MRs, official test set 4,693 over 630; WebNLG 2017 development set 872 triple sets, 2,268 texts, 10 categories;
DART v1.1.1 development set 2,768 triple sets of which 421 are WikiSQL / WikiTableQuestions), counted here again
from the raw files with the standard library, independently of the readers under test.
"""
import csv
import hashlib
import io
import json
import lzma
import shutil
from importlib import resources

import pytest

import qaa.experiments.sources as sources
from qaa.experiments import tasks
from qaa.experiments.sources import VENDORED, DataError, read_file
from qaa.experiments.tasks import format_prompt, load_splits

VENDORED_DIR = resources.files("qaa.experiments") / "vendored"


def _raw(path):
    return lzma.decompress((VENDORED_DIR / (path + ".xz")).read_bytes())


# ---------------------------------------------------------------------------------------------- the files

@pytest.mark.parametrize("path", list(VENDORED))
def test_vendored_files_are_the_releases_byte_for_byte(path):
    assert hashlib.sha256(_raw(path)).hexdigest() == VENDORED[path].sha256
    blob, info = read_file(path)
    assert blob == _raw(path) and info == {"file": path, "sha256": VENDORED[path].sha256, "source": "vendored"}


def test_vendored_readme_names_every_file_licence_and_citation():
    readme = (VENDORED_DIR / "README.md").read_text(encoding="utf-8")
    for path, entry in VENDORED.items():
        assert path in readme and entry.sha256 in readme
    for words in ("CC BY-SA 4.0", "CC BY-NC-SA 4.0", "non-commercial", "MIT", "Novikova", "Gardent", "Nan et al"):
        assert words in readme


def test_e2e_sizes_and_every_reference_kept():
    for path, rows, mrs in (("e2e/devset.csv", 4672, 547), ("e2e/testset_w_refs.csv", 4693, 630)):
        raw = list(csv.DictReader(io.StringIO(_raw(path).decode("utf-8"))))
        assert len(raw) == rows and len({r["mr"] for r in raw}) == mrs
    s = load_splits("e2e", split_seed=0)
    raw_test = list(csv.DictReader(io.StringIO(_raw("e2e/testset_w_refs.csv").decode("utf-8"))))
    expected = {}
    for r in raw_test:
        expected.setdefault(r["mr"].strip(), set()).add(r["ref"].strip())
    assert len(s.test) == 630 and {e.input: set(e.references) for e in s.test} == expected
    assert len(s.train) + len(s.val) == 547 and len(s.val) == round(0.1 * 547)
    assert [f["file"] for f in s.info["files"]] == ["e2e/devset.csv", "e2e/testset_w_refs.csv"]


def test_webnlg_and_dart_sizes():
    web = json.loads(_raw("webnlg2017/dev.json"))["entries"]
    entries = [next(iter(e.values())) for e in web]
    assert len(entries) == 872 and sum(len(e["lexicalisations"]) for e in entries) == 2268
    assert len({e["category"] for e in entries}) == 10
    s = load_splits("webnlg", split_seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == len({tuple(map(str, e["modifiedtripleset"])) for e in entries})
    dart = json.loads(_raw("dart/dart-v1.1.1-full-dev.json"))
    assert len(dart) == 2768
    open_domain = [d for d in dart if d["annotations"][0]["source"] in sources.DART_OPEN_DOMAIN_SOURCES]
    assert len(open_domain) == 421
    s = load_splits("dart", split_seed=0)
    inputs = {e.input for e in s.train + s.val + s.test}
    assert len(inputs) == len({json.dumps(d["tripleset"]) for d in open_domain})
    assert not any("name[" in i for i in inputs)  # no E2E record slipped in


@pytest.mark.parametrize("task", ["e2e", "webnlg", "webnlg_unseen", "dart"])
@pytest.mark.parametrize("seed", [0, 1, 17])
def test_splits_are_disjoint_by_input_for_several_seeds(task, seed):
    s = load_splits(task, split_seed=seed)
    parts = [{e.input for e in p} for p in (s.train, s.val, s.test)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert load_splits(task, split_seed=seed).test == s.test   # a function of the split seed alone
    assert s.info["split_seed"] == seed and s.info["task"] == task


def test_webnlg_unseen_holds_out_whole_categories():
    entries = [next(iter(e.values())) for e in json.loads(_raw("webnlg2017/dev.json"))["entries"]]
    category = {}  # triple set -> every category listing it (one set of the release is in two)
    for e in entries:
        key = ", ".join("(" + " | ".join((t["subject"], t["property"], t["object"])) + ")"
                        for t in e["modifiedtripleset"])
        category.setdefault(key, set()).add(e["category"])
    assert sum(len(c) > 1 for c in category.values()) == 1
    for seed in (0, 1, 2, 3):
        s = load_splits("webnlg_unseen", split_seed=seed)
        held = set(s.info["held_out_categories"])
        n_held = sum(1 for c in category.values() if c & held)
        assert len(held) == 3 and n_held >= 150
        assert not set().union(*(category[e.input] for e in s.train + s.val)) & held
        unseen = s.test_groups["unseen"]
        assert [bool(category[e.input] & held) for e in s.test] == unseen
        assert sum(unseen) == n_held and not all(unseen)
        capped = s.capped(eval_size=20)
        assert sum(capped.test_groups["unseen"]) == 20 and len(capped.test) == 40


def test_test_order_is_seeded_and_a_cap_is_its_prefix():
    a, b = load_splits("e2e", split_seed=0), load_splits("e2e", split_seed=1)
    assert a.test != b.test and {e.input for e in a.test} == {e.input for e in b.test}
    assert a.capped(eval_size=50).test == a.test[:50]


def test_every_reference_of_a_scored_input_is_in_scoring(tiny_model_dir):
    """The encoded test pairs hold every reference of every capped test input (none dropped by the cap)."""
    from transformers import AutoTokenizer

    from qaa.experiments.pipeline import load_splits as capped_splits, prepare_task

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    s = capped_splits("e2e", 0, 0.1, 0.2, eval_size=5, val_size=3)
    s.train = s.train[:4]
    data = prepare_task("e2e", tok, s)
    assert data.info["test_references"] == sum(len(e.references) for e in data.test_ex) == len(data.test_owner)
    assert [data.test_owner.count(i) for i in range(5)] == [len(e.references) for e in data.test_ex]


def test_prompts_are_well_formed():
    for name in tasks.names():
        prompt = format_prompt(name, "  {braces} and text ")
        assert "{braces} and text" in prompt and prompt.endswith(":") and not prompt.endswith(" ")
    s = load_splits("e2e", split_seed=0)
    prompt = format_prompt("e2e", s.test[0].input)
    assert prompt.startswith("Describe the restaurant") and s.test[0].input in prompt and "name[" in prompt
    with pytest.raises(ValueError, match="unknown task"):
        format_prompt("squad", "x")
    with pytest.raises(TypeError):
        format_prompt("e2e", None)


# ---------------------------------------------------------------------------------------------- bad input

@pytest.fixture
def vendored_copy(tmp_path, monkeypatch):
    root = tmp_path / "vendored"
    for path in VENDORED:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(VENDORED_DIR / (path + ".xz"), root / (path + ".xz"))
    monkeypatch.setattr(sources, "_VENDORED_ROOT", root)
    return root


def test_a_truncated_or_edited_vendored_file_is_an_error_naming_it(vendored_copy):
    f = vendored_copy / "e2e" / "devset.csv.xz"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"e2e/devset\.csv\.xz cannot be read"):
        load_splits("e2e")
    edited = _raw("e2e/devset.csv").replace(b"Alimentum", b"Alimentus", 1)
    f.write_bytes(lzma.compress(edited))
    with pytest.raises(DataError, match=r"e2e/devset\.csv\.xz is corrupted: SHA-256"):
        load_splits("e2e")


def test_user_data_folder(tmp_path):
    folder = tmp_path / "e2e"
    folder.mkdir()
    (folder / "devset.csv").write_bytes(_raw("e2e/devset.csv"))
    with pytest.raises(DataError, match="no file testset_w_refs.csv"):
        load_splits("e2e", data_dir=folder)
    (folder / "testset_w_refs.csv.xz").write_bytes(lzma.compress(_raw("e2e/testset_w_refs.csv")))
    s = load_splits("e2e", data_dir=folder)
    assert len(s.test) == 630 and s.info["files"][0]["source"] == str(folder)
    # the full release: trainset.csv trains, the development set validates (a 3-MR stand-in here)
    (folder / "trainset.csv").write_text('mr,ref\n"name[A], food[Thai]","A serves Thai food."\n'
                                         '"name[B], area[riverside]","B is by the river."\n', encoding="utf-8")
    s = load_splits("e2e", data_dir=folder)
    assert len(s.train) == 2 and len(s.val) == 547 and "official training set" in s.info["split"]
    (folder / "trainset.csv").write_text("meaning,text\nx,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"trainset\.csv: missing column\(s\) mr, ref"):
        load_splits("e2e", data_dir=folder)


def test_jsonl_task(tmp_path):
    lines = [json.dumps({"input": f"in {i}", "references": [f"out {i}", f"alt {i}"]}) for i in range(20)]
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    s = load_splits("jsonl", split_seed=0, data_dir=f)
    assert len(s.train) + len(s.val) + len(s.test) == 20 and s.test[0].references[1].startswith("alt")
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(lines[:15]), encoding="utf-8")
    (folder / "test.jsonl").write_text("\n".join(lines[15:]), encoding="utf-8")
    s = load_splits("jsonl", split_seed=0, data_dir=folder)
    assert len(s.test) == 5 and len(s.train) + len(s.val) == 15
    (folder / "test.jsonl").write_text('{"input": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.jsonl, line 1"):
        load_splits("jsonl", data_dir=folder)
    with pytest.raises(DataError, match="needs --data"):
        load_splits("jsonl")


def test_unknown_task_and_webnlg_holdout_that_leaves_a_split_empty(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'squad'"):
        load_splits("squad")
    # three categories only: holding out three leaves no training category
    entries = [next(iter(e.values())) for e in json.loads(_raw("webnlg2017/dev.json"))["entries"]]
    few = [e for e in entries if e["category"] in ("Food", "Airport", "Building")]
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "dev.json").write_text(json.dumps({"entries": [{"1": e} for e in few]}), encoding="utf-8")
    with pytest.raises(DataError, match="dev.json has 3 categories"):
        load_splits("webnlg_unseen", data_dir=folder)


@pytest.mark.parametrize("argv, message", [
    (["--task", "squad"], "invalid choice: 'squad'"),
    (["--data", "{tmp}/missing"], "--data {tmp}/missing: no such file or folder"),
    (["--data", "{tmp}/empty"], "no file devset.csv"),
    (["--task", "jsonl"], "--task jsonl needs --data"),
    (["--task", "webnlg_unseen", "--data", "{tmp}/web3"], "dev.json has 3 categories"),
])
def test_finetune_bad_data_exits_2_before_the_model_and_writes_nothing(argv, message, tmp_path, monkeypatch,
                                                                      capsys):
    import qaa.experiments.finetune
    from qaa.experiments.cli import main

    (tmp_path / "empty").mkdir()
    web3 = tmp_path / "web3"
    web3.mkdir()
    entries = [next(iter(e.values())) for e in json.loads(_raw("webnlg2017/dev.json"))["entries"]]
    (web3 / "dev.json").write_text(json.dumps({"entries": [{"1": e} for e in entries
                                                           if e["category"] in ("Food", "City", "Monument")]}))
    monkeypatch.setattr(qaa.experiments.finetune, "load_base_model",
                        lambda *a, **k: pytest.fail("the model must not be loaded"))
    out = tmp_path / "out"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(["finetune", *argv, "--out", str(out), "--no-progress"])
    except SystemExit as e:  # argparse's own choice check
        code = e.code
    assert code == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err
    assert not out.exists()


def test_compare_bad_data_exits_2_and_writes_nothing(tmp_path, capsys):
    from qaa.experiments.cli import main

    out = tmp_path / "out"
    assert main(["compare", "--tasks", "e2e,dart", "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "--data applies to one task" in capsys.readouterr().err
    assert main(["compare", "--tasks", "e2e", "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "no file devset.csv" in capsys.readouterr().err
    assert not out.exists()
