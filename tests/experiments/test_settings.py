"""``qaa compare`` settings: presets, options over presets, bad values refused before anything loads, rates
read from an earlier comparison (qaa.experiments.settings and the command line's parser)."""
import json

import pytest

from qaa.experiments.presets import CORE_METHODS, E2E_METHODS, PRESETS
from qaa.experiments.settings import resolve_settings
from support import compare_args as _args


def test_presets_resolve_to_their_values():
    cpu = resolve_settings(_args(preset="cpu"))
    assert cpu.tasks == ("e2e", "webnlg_unseen", "dart")
    assert cpu.methods == {"e2e": E2E_METHODS, "webnlg_unseen": CORE_METHODS, "dart": CORE_METHODS}
    assert set(E2E_METHODS) >= {"qaa", "qaa_std", "qaa_frozen_theta", "qaa_no_entangler", "random_features", "bias",
                                "lora", "lora_r4", "prefix", "full"}
    assert cpu.excluded == {} and "sora" in cpu.methods["e2e"]  # SoRA runs, its threshold swept
    # the sweeps' training seed is apart from the final seeds, and the split seed is one nothing was tuned on
    assert cpu.seeds == (0, 1, 2) and cpu.select_lr and cpu.split_seed == 1 and cpu.selection_seed == 100
    assert cpu.curve_points == 8 and cpu.curve_pairs > 0
    assert (cpu.steps, cpu.batch_size) == (PRESETS["cpu"]["steps"], PRESETS["cpu"]["batch_size"])
    assert cpu.max_length == {"e2e": None, "webnlg_unseen": None, "dart": None}  # fitted to the training split
    assert cpu.eval_size == {"e2e": 50, "webnlg_unseen": 50, "dart": 50} and not cpu.eval_size_given
    assert cpu.val_size == {"e2e": 40, "webnlg_unseen": 40, "dart": 40}
    assert cpu.lr == {} and cpu.warmup_steps == max(1, round(0.1 * cpu.steps)) and cpu.threads == 1
    label = resolve_settings(_args(preset="cpu", model="smollm2-135m-instruct")).model_label
    assert "de-quantised" in label and "Q4_1" in label
    gpu = resolve_settings(_args(preset="gpu"))
    assert gpu.tasks == cpu.tasks and "sora" in gpu.methods["e2e"] and "full" in gpu.methods["e2e"]
    assert gpu.steps > cpu.steps and gpu.batch_size > cpu.batch_size and gpu.eval_size["e2e"] is None
    smoke = resolve_settings(_args(preset="smoke"))
    assert smoke.steps < cpu.steps and smoke.seeds == (0,) and not smoke.select_lr


def test_options_override_the_preset():
    s = resolve_settings(_args(preset="cpu", tasks="webnlg", methods="sora,qaa", full=True, steps=7,
                               batch_size=3, eval_size=5, max_length=64, max_new_tokens=9, seeds="4,2",
                               lr="qaa=1e-2,full=1e-5", sora_xi=0.01, no_bertscore=True, split_seed=3,
                               max_widen=0))
    assert s.tasks == ("webnlg",)
    assert s.methods == {"webnlg": ("sora", "qaa", "full")}     # the order given, --full appended
    assert (s.steps, s.batch_size, s.eval_size, s.max_new_tokens) == (7, 3, {"webnlg": 5}, {"webnlg": 9})
    assert s.max_length == {"webnlg": 64} and s.eval_size_given
    assert s.lr == {"qaa": 1e-2, "full": 1e-5} and s.seeds == (4, 2) and s.split_seed == 3
    assert s.sora_xi == 0.01 and not s.bertscore and s.warmup_steps == 1 and s.max_widen == 0
    assert resolve_settings(_args(preset="cpu")).max_widen == 4
    assert resolve_settings(_args(preset="cpu", seed=5)).seeds == (5,)   # the common --seed: one training seed


@pytest.mark.parametrize("kw, message", [
    (dict(methods="qaa,dora"), "unknown method"),
    (dict(tasks="e2e,squad"), "unknown task"),
    (dict(steps=0), "--steps must be an integer >= 1"),
    (dict(steps=10**9), "--steps must be <= 1000000"),
    (dict(batch_size=-2), "--batch-size must be an integer >= 1"),
    (dict(eval_size=0), "--eval-size must be an integer >= 1"),
    (dict(preset="tpu"), "unknown preset"),
    (dict(lr="lora"), "METHOD=LR"),
    (dict(lr="lora=-1"), "positive finite"),
    (dict(lr="dora=1e-3"), "--lr takes METHOD=LR"),
    (dict(max_length=4), "--max-length must be an integer >= 8"),
    (dict(sora_xi=-1.0), "--sora-xi"),
    (dict(threads=-1), "--threads must be >= 0"),
    (dict(seeds="0,x"), "--seeds"),
    (dict(seeds="1,1"), "--seeds must be distinct"),
    (dict(lr_from="/nonexistent/results.json"), "--lr-from"),
    (dict(max_widen=-1), "--max-widen must be an integer >= 0"),
    (dict(max_widen=11), "--max-widen must be <= 10"),
])
def test_bad_settings_raise_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        resolve_settings(_args(**kw))


def test_rates_from_an_earlier_run_are_per_task_and_need_the_same_split(tmp_path):
    earlier = tmp_path / "results.json"
    earlier.write_text(json.dumps({
        "settings": {"split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.25},
        "selection": {"e2e|qaa": {"status": "ok", "lr": 1e-2, "theta_lr_ratio": 10.0, "swept": True},
                      "webnlg|qaa": {"status": "ok", "lr": 3e-3, "theta_lr_ratio": 1.0, "swept": True},
                      "webnlg|lora": {"status": "ok", "lr": 1e-3, "theta_lr_ratio": 1.0, "swept": True},
                      "e2e|bias": {"status": "error", "error": "diverged"}}}))
    s = resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa,lora,bias", split_seed=0,
                               lr_from=str(earlier)))
    # this task's own choice where there is one; another task's where there is none; failed ones are not rates
    assert s.lr == {"qaa": 1e-2, "lora": 1e-3} and s.theta_lr_ratio == {"qaa": 10.0, "lora": 1.0}
    assert s.lr_chosen_on == {"qaa": ["e2e"], "lora": ["webnlg"]}  # recorded for the report
    s = resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa,lora", split_seed=0, lr="qaa=0.5",
                               lr_from=str(earlier)))
    assert s.lr == {"qaa": 0.5, "lora": 1e-3} and s.lr_chosen_on == {"lora": ["webnlg"]}  # --lr wins
    with pytest.raises(ValueError, match="differ by task"):
        resolve_settings(_args(preset="cpu", tasks="e2e,webnlg", methods="qaa", split_seed=0, lr_from=str(earlier)))
    with pytest.raises(ValueError, match="--lr-from .* split_seed 0, this run uses 3"):
        resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa", split_seed=3, lr_from=str(earlier)))


def test_rate_origin_follows_given_rates_to_the_sweep_that_chose_them(tmp_path):
    """A rate carried task to task (--lr-from) names the task whose validation sweep chose it, never a task where
    it was only given; a typed rate (--lr) has no origin; a record that names its own task (read back from its
    own folder) resolves to the sweep with the same rate; a task of another file is taken as recorded."""
    from qaa.experiments.results import rate_origin

    swept = {"status": "ok", "lr": 9e-3, "theta_lr_ratio": 1.0, "swept": True}
    given = {"status": "ok", "lr": 9e-3, "theta_lr_ratio": 1.0, "swept": False, "given": True}
    sel = {"e2e|lora": swept,
           "dart|lora": {**given, "chosen_on": ["e2e"]},
           "webnlg|lora": {**given, "chosen_on": ["webnlg"]},             # read back from its own folder
           "e2e|frozen": {**given, "given_by": "--lr"},                      # typed: no origin
           "dart|frozen": {**given, "chosen_on": ["e2e"]},
           "webnlg|bias": {**given, "chosen_on": ["dart", "e2e"]},
           "dart|bias": {**given, "chosen_on": ["e2e"]},
           "e2e|bias": {**swept, "lr": 3e-2},                                 # another rate: not this one's origin
           "e2e|prefix": {**given, "chosen_on": ["e2e"]}}                     # the other file's e2e
    assert rate_origin(sel, "e2e", "lora") == ["e2e"]
    assert rate_origin(sel, "dart", "lora") == ["e2e"]
    assert rate_origin(sel, "webnlg", "lora") == ["e2e"]
    assert rate_origin(sel, "e2e", "frozen") == [] and rate_origin(sel, "dart", "frozen") == []
    assert rate_origin(sel, "webnlg", "bias") == ["e2e"]      # dart's record is followed; e2e's other rate is not
    assert rate_origin(sel, "e2e", "prefix") == ["e2e"]
    assert rate_origin(sel, "mart", "lora") == []
    # --lr-from records the origin, not the task it read the rate from
    earlier = tmp_path / "results.json"
    earlier.write_text(json.dumps({"settings": {"split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.25},
                                   "selection": {k: v for k, v in sel.items() if k.endswith("|lora")}}))
    s = resolve_settings(_args(preset="cpu", tasks="webnlg_unseen", methods="lora", split_seed=0,
                               lr_from=str(earlier)))
    assert s.lr == {"lora": 9e-3} and s.lr_chosen_on == {"lora": ["e2e"]}


def test_grid_centres_from_an_earlier_run(tmp_path):
    """--lr-grid-from: each method's chosen rate becomes its sweep's centre; methods with circuit angles carry
    their angle-rate ratio (LoRA has none to carry); --lr wins; the same split is required; it needs a sweep
    and cannot be combined with --lr-from."""
    earlier = tmp_path / "results.json"
    earlier.write_text(json.dumps({
        "settings": {"split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.25},
        "selection": {"e2e|qaa": {"status": "ok", "lr": 1e-2, "theta_lr_ratio": 10.0, "swept": True},
                      "e2e|lora": {"status": "ok", "lr": 0.009000000000000001, "theta_lr_ratio": 1.0}}}))
    s = resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa,lora,bias", split_seed=0,
                               lr_grid_from=str(earlier)))
    assert s.lr_centre == {"qaa": 1e-2, "lora": 9e-3} and s.lr_centre_ratio == {"qaa": 10.0}
    assert s.lr_centre_how == {"qaa": "chosen on validation on e2e", "lora": "given on e2e"}
    assert s.lr == {} and s.lr_grid_from == str(earlier) and s.select_lr
    s = resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa,lora", split_seed=0, lr="qaa=0.5",
                               lr_grid_from=str(earlier)))
    assert s.lr == {"qaa": 0.5} and s.lr_centre == {"lora": 9e-3} and s.lr_centre_ratio == {}
    with pytest.raises(ValueError, match="--lr-grid-from .* split_seed 0, this run uses 3"):
        resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa", split_seed=3, lr_grid_from=str(earlier)))
    with pytest.raises(ValueError, match="give one"):
        resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa", split_seed=0, lr_grid_from=str(earlier),
                               lr_from=str(earlier)))
    with pytest.raises(ValueError, match="does not sweep"):
        resolve_settings(_args(preset="cpu", tasks="e2e", methods="qaa", split_seed=0, lr_grid_from=str(earlier),
                               select_lr=False))
    with pytest.raises(ValueError, match="--lr-grid-from .*not a qaa compare results.json"):
        resolve_settings(_args(preset="cpu", lr_grid_from=str(tmp_path / "missing.json")))


def test_cli_reports_bad_input_before_loading_anything(tmp_path, capsys):
    from qaa.experiments.cli import main

    assert main(["compare", "--methods", "qaa,dora", "--out", str(tmp_path)]) == 2
    assert "qaa compare: error: unknown method(s) dora" in capsys.readouterr().err
    assert main(["compare", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "--steps must be an integer >= 1" in capsys.readouterr().err
    assert main(["compare", "--lr", "nope=1e-3", "--out", str(tmp_path)]) == 2
    assert "--lr takes METHOD=LR" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())   # nothing was written


def test_cli_parser_leaves_preset_values_unset():
    import qaa.experiments.cli as cli

    parser = cli.build_parser()
    s = resolve_settings(parser.parse_args(["compare"]))
    assert s.eval_size == {t: PRESETS["cpu"]["eval_size"]["*"] for t in s.tasks} and s.threads == 1
    assert s.seeds == (0, 1, 2) and s.select_lr
    s = resolve_settings(parser.parse_args(["compare", "--eval-size", "3", "--max-length", "80", "--lr", "qaa=2e-3",
                                            "--no-select-lr", "--seeds", "1"]))
    assert set(s.eval_size.values()) == {3} and set(s.max_length.values()) == {80} and s.lr["qaa"] == 2e-3
    assert not s.select_lr and s.seeds == (1,)
