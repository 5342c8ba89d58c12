"""The results file's owner (qaa.experiments.results): keys, the locked store that several processes fill,
resumption rules, losses.csv."""
import csv
import json
import math

import pytest

from qaa.experiments.results import (RESULTS_FILE, RESULTS_VERSION, Store, incompatible_settings, run_key,
                                     selection_key, split_key, write_losses)
from qaa.experiments.selection import select_best


class _Settings:
    def __init__(self, **kw):
        self.d = {"model": "m", "steps": 4, "tasks": ["e2e"], "eval_size": {"e2e": 5}, **kw}

    def to_dict(self):
        return dict(self.d)


def test_keys_round_trip():
    key = run_key("e2e", "qaa", 3e-3, 10.0, 2)
    assert key == "e2e|qaa|lr=0.003|ratio=10|seed=2"
    assert split_key(key) == ("e2e", "qaa")
    assert run_key("dart", "base") == "dart|base" and split_key("dart|base") == ("dart", "base")
    assert split_key(selection_key("webnlg_unseen", "lora_r4")) == ("webnlg_unseen", "lora_r4")


def test_two_stores_on_one_folder_keep_each_others_records(tmp_path):
    a = Store(tmp_path, _Settings(), {"started": "x"})
    b = Store(tmp_path, _Settings(tasks=["dart"]), {"started": "y"})  # another process, another task
    a.update("runs", run_key("e2e", "qaa", 1e-3, 1.0, 0), {"status": "ok", "val_nll": 1.5})
    b.update("runs", run_key("dart", "qaa", 1e-3, 1.0, 0), {"status": "ok", "val_nll": 1.7})
    a.set_meta("selection", selection_key("e2e", "qaa"), {"status": "ok", "lr": 1e-3})
    data = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert data["version"] == RESULTS_VERSION
    assert set(data["runs"]) == {"e2e|qaa|lr=0.001|ratio=1|seed=0", "dart|qaa|lr=0.001|ratio=1|seed=0"}
    assert data["selection"] == {"e2e|qaa": {"status": "ok", "lr": 1e-3}}
    assert a.finished("runs", "e2e|qaa|lr=0.001|ratio=1|seed=0")["val_nll"] == 1.5
    assert a.finished("runs", "nope") is None


def test_incompatible_settings_are_refused_and_resumable_ones_are_not(tmp_path):
    Store(tmp_path, _Settings(), {})
    Store(tmp_path, _Settings(tasks=["dart"], threads=2), {})  # tasks, threads: resumable differences
    Store(tmp_path, _Settings(eval_size={"dart": 9}), {})  # per-task sizes compare on common tasks only
    # given rates and ratios (--lr-from sets both) are in each run's key: a folder resumes with others
    Store(tmp_path, _Settings(lr={"qaa": 0.01}, theta_lr_ratio={"qaa": 10.0}), {})
    with pytest.raises(ValueError, match="incompatible comparison.*steps"):
        Store(tmp_path, _Settings(steps=8), {})
    assert incompatible_settings({"eval_size": {"e2e": 5}}, {"eval_size": {"e2e": 6}}) == ["eval_size"]
    # a folder filled before --lr-grid-from existed had no centres: it resumes without them, not with them,
    # and a centred folder does not resume with another file's centres
    assert incompatible_settings({"steps": 8}, {"steps": 8, "lr_centre": {}, "lr_grid_from": None}) == []
    assert incompatible_settings({"steps": 8}, {"steps": 8, "lr_centre": {"qaa": 0.01}, "lr_grid_from": "a.json"}
                                 ) == ["lr_centre", "lr_grid_from"]
    assert incompatible_settings({"lr_grid_from": "a.json"}, {"lr_grid_from": "b.json"}) == ["lr_grid_from"]
    # one method per process on one centring file: each compares only the methods both run
    qaa = {"methods": {"e2e": ["qaa"]}, "lr_grid_from": "a.json", "lr_centre": {"qaa": 0.01},
           "lr_centre_ratio": {"qaa": 1.0}, "lr_centre_how": {"qaa": "chosen on validation on e2e"}}
    lora = {"methods": {"e2e": ["lora_r4"]}, "lr_grid_from": "a.json", "lr_centre": {"lora_r4": 0.009},
            "lr_centre_ratio": {}, "lr_centre_how": {"lora_r4": "chosen on validation on e2e"}}
    assert incompatible_settings(qaa, lora) == []
    both = {"methods": {"e2e": ["qaa", "lora_r4"]}, "lr_grid_from": "a.json",
            "lr_centre": {"qaa": 0.01, "lora_r4": 0.009}, "lr_centre_ratio": {"qaa": 1.0},
            "lr_centre_how": {"qaa": "chosen on validation on e2e", "lora_r4": "chosen on validation on e2e"}}
    assert incompatible_settings(both, lora) == [] and incompatible_settings(qaa, both) == []
    # the same method centred elsewhere, or centred in one run and given its rate (no centre) in the other
    assert incompatible_settings(qaa, {**qaa, "lr_centre": {"qaa": 0.03}}) == ["lr_centre"]
    assert incompatible_settings(qaa, {**qaa, "lr_centre": {}, "lr_centre_ratio": {}, "lr_centre_how": {}}
                                 ) == ["lr_centre", "lr_centre_how", "lr_centre_ratio"]
    (tmp_path / RESULTS_FILE).write_text("{broken")
    with pytest.raises(ValueError, match="cannot be read"):
        Store(tmp_path, _Settings(), {})


def test_losses_csv_holds_every_step(tmp_path):
    results = {"runs": {"k": {"task": "e2e", "method": "qaa", "lr": 1e-3, "theta_lr_ratio": 1.0, "seed": 0,
                              "losses": [2.5, 2.0], "step_seconds": [0.5, 0.25]}}}
    write_losses(results, tmp_path)
    rows = list(csv.reader((tmp_path / "losses.csv").open()))
    assert rows[0] == ["task", "method", "lr", "theta_lr_ratio", "seed", "step", "loss", "step_seconds"]
    assert rows[1:] == [["e2e", "qaa", "0.001", "1", "0", "0", "2.500000", "0.5000"],
                        ["e2e", "qaa", "0.001", "1", "0", "1", "2.000000", "0.2500"]]


def test_select_best_takes_the_lowest_validation_nll_with_ties_to_the_smaller_rate():
    recs = {(1e-3, 1.0): {"val_nll": 1.5}, (3e-3, 1.0): {"val_nll": 1.4}, (3e-3, 10.0): {"val_nll": 1.4},
            (1e-2, 1.0): {"val_nll": math.nan}, (3e-2, 1.0): None}
    assert select_best(recs) == (3e-3, 1.0)
    with pytest.raises(RuntimeError, match="no learning rate"):
        select_best({(1e-3, 1.0): {"val_nll": math.inf}})
