"""Where QAA's defaults come from, recorded as data, and whether a run's test inputs overlap the inputs they were
judged on.

QAA's defaults (ansatz, layers, initialisation, the centre of its learning-rate grid) were set in earlier runs on
the GEM ``e2e_nlg`` task of the BIG-bench 1.0.0 archive, split seed 0 (validation fraction 0.1, test fraction
0.2): ``qaa finetune`` (docs/results/archive/finetune_gem_e2e) and the first comparison
(docs/results/archive/compare_cpu_gem). Those runs were judged on the 43 held-out inputs of that split
(:data:`QAA_DEFAULTS` ``["judged_on"]``; the finetune's 40 are among them). The SHA-256 of the task file was not
recorded when the defaults were set and the archive can no longer be obtained, so the inputs themselves are the
record: a run's test inputs overlap the defaults' when one of them is, after :func:`canonical_input`, one of
these. E2E meaning representations are compared as sets of (attribute, value), so ``name[X], food[Y]`` (the
E2E CSV form) and ``name: X, food: Y`` (the GEM form) of one MR match.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, List, Sequence

__all__ = ["QAA_DEFAULTS", "canonical_input", "defaults_overlap"]

#: The held-out inputs of the runs that set QAA's defaults (GEM e2e_nlg, split seed 0), as those runs recorded
#: them (docs/results/archive/compare_cpu_gem/results.json, ``tasks.e2e_nlg.test_input_texts``).
_JUDGED_ON = (
    "name: Green Man, eatType: pub, customer rating: 3 out of 5, near: All Bar One",
    "name: Cocum, eatType: coffee shop, near: The Rice Boat",
    "name: Cotto, eatType: coffee shop, near: The Bakers",
    "name: Green Man, eatType: restaurant, familyFriendly: no, near: Express by Holiday Inn",
    "name: Giraffe, eatType: pub, food: French, area: riverside, familyFriendly: no, near: Raja Indian Cuisine",
    "name: Giraffe, eatType: pub, area: riverside, familyFriendly: no, near: Raja Indian Cuisine",
    "name: The Cricketers, eatType: coffee shop, near: Express by Holiday Inn",
    "name: Giraffe, eatType: restaurant, familyFriendly: no, near: Rainbow Vegetarian Café",
    "name: Giraffe, eatType: pub, food: French, area: city centre, familyFriendly: no, near: Raja Indian Cuisine",
    "name: Green Man, eatType: pub, area: riverside, familyFriendly: yes, near: Express by Holiday Inn",
    "name: Blue Spice, eatType: pub, food: English, area: city centre, familyFriendly: yes, near: Rainbow Vegetarian Café",
    "name: Green Man, eatType: restaurant, food: Japanese, area: riverside, near: Express by Holiday Inn",
    "name: The Cricketers, familyFriendly: yes, near: Café Sicilia",
    "name: The Cricketers, eatType: coffee shop, near: Café Sicilia",
    "name: Green Man, eatType: restaurant, food: Italian, familyFriendly: yes, near: Express by Holiday Inn",
    "name: Blue Spice, eatType: restaurant, food: Chinese, area: city centre, near: Rainbow Vegetarian Café",
    "name: Giraffe, eatType: pub, food: French, familyFriendly: yes, near: Raja Indian Cuisine",
    "name: Clowns, eatType: coffee shop, near: The Sorrento",
    "name: The Cricketers, eatType: coffee shop, customer rating: 5 out of 5, familyFriendly: yes, near: Crowne Plaza Hotel",
    "name: Clowns, eatType: pub, customer rating: 5 out of 5, near: Crowne Plaza Hotel",
    "name: Giraffe, eatType: restaurant, food: French, area: riverside, near: Raja Indian Cuisine",
    "name: Green Man, eatType: pub, familyFriendly: yes, near: Express by Holiday Inn",
    "name: Green Man, eatType: pub, area: city centre, area: riverside, near: Express by Holiday Inn",
    "name: Blue Spice, eatType: restaurant, food: English, area: city centre, familyFriendly: no, near: Rainbow Vegetarian Café",
    "name: Clowns, eatType: coffee shop, customer rating: 5 out of 5, near: Crowne Plaza Hotel",
    "name: Giraffe, eatType: restaurant, food: French, familyFriendly: yes, near: Raja Indian Cuisine",
    "name: Blue Spice, eatType: restaurant, food: Chinese, area: riverside, familyFriendly: no, near: Rainbow Vegetarian Café",
    "name: Giraffe, eatType: restaurant, near: Raja Indian Cuisine",
    "name: The Cricketers, eatType: coffee shop, customer rating: 5 out of 5, familyFriendly: yes, near: Avalon",
    "name: The Cricketers, eatType: coffee shop, customer rating: 5 out of 5, near: Crowne Plaza Hotel",
    "name: Giraffe, eatType: pub, food: French, area: riverside, near: Raja Indian Cuisine",
    "name: Blue Spice, eatType: restaurant, food: English, area: riverside, near: Rainbow Vegetarian Café",
    "name: Blue Spice, eatType: pub, food: English, area: riverside, familyFriendly: yes, near: Rainbow Vegetarian Café",
    "name: Giraffe, eatType: restaurant, food: French, area: city centre, familyFriendly: no, near: Raja Indian Cuisine",
    "name: Strada, eatType: coffee shop, area: city centre",
    "name: Strada, eatType: coffee shop, customer rating: 1 out of 5, near: All Bar One",
    "name: Green Man, eatType: pub, food: Japanese, near: Express by Holiday Inn",
    "name: Giraffe, eatType: restaurant, area: riverside, familyFriendly: no",
    "name: Blue Spice, eatType: pub, area: riverside",
    "name: Blue Spice, eatType: restaurant, area: riverside, familyFriendly: yes, near: Rainbow Vegetarian Café",
    "name: Giraffe, eatType: restaurant, area: riverside, familyFriendly: yes, near: Rainbow Vegetarian Café",
    "name: Giraffe, eatType: restaurant, food: Fast food, area: riverside, familyFriendly: no, near: Rainbow Vegetarian Café",
    "name: Clowns, eatType: pub, near: The Sorrento",
)

_BRACKET_MR = re.compile(r"^\s*[^\[\],]+\[[^\]]*\](\s*,\s*[^\[\],]+\[[^\]]*\])*\s*$")
_BRACKET_SLOT = re.compile(r"([^\[\],]+)\[([^\]]*)\]")
_COLON_MR = re.compile(r"^\s*[A-Za-z][A-Za-z ]*:[^,:]*(,\s*[A-Za-z][A-Za-z ]*:[^,:]*)*\s*$")


def canonical_input(text: str) -> str:
    """The form two inputs are compared in: an E2E meaning representation (``attr[value], ...`` or
    ``attr: value, ...``) becomes its sorted, case-folded ``attr=value`` pairs joined by ``"; "``; any other
    text is case-folded with its whitespace collapsed.

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"an input must be a string, got {type(text).__name__}")
    if _BRACKET_MR.match(text):
        pairs = _BRACKET_SLOT.findall(text)
    elif _COLON_MR.match(text):
        pairs = [part.split(":", 1) for part in text.split(",")]
    else:
        return " ".join(text.split()).casefold()
    return "; ".join(sorted(f"{' '.join(a.split()).casefold()}={' '.join(v.split()).casefold()}" for a, v in pairs))


def _digest(inputs: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted({canonical_input(t) for t in inputs})).encode("utf-8")).hexdigest()


#: The provenance of QAA's defaults, stored in every comparison's results.json (``"qaa_defaults"``): the task,
#: its data file (its SHA-256 was not recorded then: None), the split, the runs that set them (with their results
#: files' SHA-256), and the held-out inputs they were judged on (with the SHA-256 of their sorted canonical forms).
QAA_DEFAULTS = {
    "what": "ansatz, layers, init, the centre of QAA's learning-rate grid",
    "task": "e2e_nlg",
    "files": [{"file": "bigbench/benchmark_tasks/gem/e2e_nlg/task.json", "source": "bigbench-1.0.0.tar.gz",
               "sha256": None}],
    "split_seed": 0,
    "val_fraction": 0.1,
    "test_fraction": 0.2,
    "set_in": [
        {"run": "qaa finetune", "results": "docs/results/archive/finetune_gem_e2e/results.json",
         "sha256": "2a5d5d938765c0bac9926819fa4452a52835f30718421a8bbfccad6c920ce5b4"},
        {"run": "qaa compare --preset cpu", "results": "docs/results/archive/compare_cpu_gem/results.json",
         "sha256": "57c3a223084f32d8412e3ea3e18323745da1848bbf4031345566db1e2677b2cf"},
    ],
    "judged_on": list(_JUDGED_ON),
    "judged_on_sha256": _digest(_JUDGED_ON),
}


def defaults_overlap(test_inputs: Sequence[str], provenance: dict = QAA_DEFAULTS) -> List[int]:
    """Indices of ``test_inputs`` that are (after :func:`canonical_input`) among the inputs QAA's defaults were
    judged on (``provenance["judged_on"]``), in order.

    Raises:
        TypeError: an input is not a string. ValueError: ``provenance`` has no ``judged_on`` list.
    """
    judged = provenance.get("judged_on") if isinstance(provenance, dict) else None
    if not isinstance(judged, list):
        raise ValueError("the provenance of QAA's defaults holds no 'judged_on' list of inputs")
    known = {canonical_input(t) for t in judged}
    return [i for i, t in enumerate(test_inputs) if canonical_input(t) in known]
