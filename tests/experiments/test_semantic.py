"""Tests for qaa.experiments.semantic: hand-written cases per value family, negations, bad inputs, and the
matchers' precision and recall against the hand-labelled outputs in data/semantic_labels.json."""
import json
from pathlib import Path

import pytest

from qaa.experiments.semantic import (ENTITY_COVERAGE_ACCURACY, SLOT_MATCHER_ACCURACY, _entity, entity_coverage,
                                      entity_matches, mr_pairs, parse_mr, parse_triples, slot_errors,
                                      triple_entities)

LABELS = json.loads((Path(__file__).parent / "data" / "semantic_labels.json").read_text(encoding="utf-8"))
FULL = ("name[The Eagle], eatType[coffee shop], food[Japanese], priceRange[less than £20], customer rating[low], "
        "area[riverside], familyFriendly[yes], near[Burger King]")


# ------------------------------------------------------------------------------------------------ MR parsing

def test_parse_mr_forms():
    expected = {"name": "The Eagle", "eatType": "coffee shop", "food": "Japanese", "priceRange": "less than £20",
                "customerRating": "low", "area": "riverside", "familyFriendly": "yes", "near": "Burger King"}
    assert parse_mr(FULL) == expected
    assert parse_mr(FULL.replace("customer rating[", "customerRating[")) == expected
    colon = ("name: The Eagle, eatType: coffee shop, food: Japanese, priceRange: less than £20, customer rating: "
             "low, area: riverside, familyFriendly: yes, near: Burger King")
    assert parse_mr(colon) == expected
    assert mr_pairs("name: Green Man, area: city centre, area: riverside") == [
        ("name", "Green Man"), ("area", "city centre"), ("area", "riverside")]
    with pytest.raises(ValueError, match="no 'attribute"):
        parse_mr("just words")
    with pytest.raises(TypeError):
        parse_mr(None)


# ------------------------------------------------------------------------------------------------ value families

def _only(mr, text):
    r = slot_errors(mr, text)
    return r.missing, r.added, tuple(w[:2] for w in r.wrong)


def test_all_slots_correct_is_zero():
    text = ("The Eagle is a cheap Japanese coffee shop by the river near Burger King. It is kid friendly and has a "
            "low customer rating.")
    r = slot_errors(FULL, text)
    assert (r.slots, r.errors, r.ser) == (8, 0, 0.0)


@pytest.mark.parametrize("value,ok,bad", [
    ("yes", ["It is family-friendly.", "It is kid friendly.", "Children are welcome.", "It welcomes families."],
     ["It is not family-friendly.", "It is not kid friendly.", "It is adults only.", "It is not suitable for kids."]),
    ("no", ["It is not family-friendly.", "It isn't child friendly.", "Families are not welcome.", "Adults only."],
     ["It is family friendly.", "It is a kid-friendly place."]),
])
def test_family_friendly_and_negations(value, ok, bad):
    mr = f"name[Aromi], familyFriendly[{value}]"
    for text in ok:
        assert _only(mr, "Aromi. " + text) == ((), (), ()), text
    for text in bad:
        assert _only(mr, "Aromi. " + text) == ((), (), (("familyFriendly", value),)), text


@pytest.mark.parametrize("value,ok,bad", [
    ("less than £20", ["cheap", "inexpensive", "priced at less than £20", "low-priced", "under £20"],
     ["expensive", "priced at more than £30", "moderately priced", "not cheap"]),
    ("cheap", ["cheap", "affordable"], ["high-priced"]),
    ("£20-25", ["priced £20-25", "priced £20 to £25", "moderately priced", "mid-range"],
     ["cheap", "expensive"]),
    ("moderate", ["moderately priced", "reasonably priced"], ["cheap"]),
    ("more than £30", ["expensive", "priced at more than £30", "high-priced", "not cheap"],
     ["cheap", "priced less than £20"]),
    ("high", ["expensive", "high-end"], ["inexpensive", "not expensive"]),
])
def test_price_range_families(value, ok, bad):
    mr = f"name[Aromi], priceRange[{value}]"
    for text in ok:
        assert _only(mr, f"Aromi is {text}.") == ((), (), ()), text
    for text in bad:
        assert _only(mr, f"Aromi is {text}.") == ((), (), (("priceRange", value),)), text


@pytest.mark.parametrize("value,ok,bad", [
    ("5 out of 5", ["rated 5 out of 5", "a five-star venue", "highly rated", "with a high customer rating"],
     ["rated 1 out of 5", "rated 3 out of 5", "poorly rated"]),
    ("high", ["rated five out of 5", "with a high customer rating"], ["with a low customer rating"]),
    ("3 out of 5", ["rated 3 out of 5", "with an average customer rating"], ["rated 5 out of 5"]),
    ("average", ["with average ratings", "rated 3 out of 5"], ["with a high customer rating"]),
    ("1 out of 5", ["rated 1 out of 5", "with a low customer rating", "one star"], ["rated 5 out of 5"]),
    ("low", ["with low ratings", "poorly rated"], ["rated 4 out of 5"]),
])
def test_customer_rating_families(value, ok, bad):
    mr = f"name[Aromi], customer rating[{value}]"
    for text in ok:
        assert _only(mr, f"Aromi is {text}.") == ((), (), ()), text
    for text in bad:
        assert _only(mr, f"Aromi is {text}.") == ((), (), (("customerRating", value),)), text


def test_eat_type_food_area_families():
    assert _only("name[Aromi], eatType[coffee shop]", "Aromi is a café.") == ((), (), ())
    assert _only("name[Aromi], eatType[coffee shop]", "Aromi is a pub.") == ((), (), (("eatType", "coffee shop"),))
    assert _only("name[Aromi], eatType[pub]", "Aromi is a restaurant.") == ((), (), (("eatType", "pub"),))
    assert _only("name[Aromi], food[English]", "Aromi serves British food.") == ((), (), ())
    assert _only("name[Aromi], food[Fast food]", "Aromi serves fast food.") == ((), (), ())
    assert _only("name[Aromi], food[French]", "Aromi serves Italian food.") == ((), (), (("food", "French"),))
    assert _only("name[Aromi], food[French]", "Aromi serves Mexican food.") == ((), (), (("food", "French"),))
    assert _only("name[Aromi], area[riverside]", "Aromi is by the river.") == ((), (), ())
    assert _only("name[Aromi], area[city centre]", "Aromi is in the centre of the city.") == ((), (), ())
    assert _only("name[Aromi], area[city centre]", "Aromi is in the riverside area.") == (
        (), (), (("area", "city centre"),))


def test_names_near_and_masking():
    mr = "name[Giraffe], near[Raja Indian Cuisine]"
    # "Indian" inside a venue name is not food; "Café" inside a venue name is not a coffee shop
    assert _only(mr, "Giraffe is near Raja Indian Cuisine.") == ((), (), ())
    assert _only("name[Giraffe], near[Café Rouge]", "Giraffe is near Café Rouge.") == ((), (), ())
    assert _only(mr, "Giraffe is a venue.") == (("near",), (), ())
    assert _only(mr, "Giraffe is near Café Rouge.") == ((), (), (("near", "Raja Indian Cuisine"),))
    assert _only(mr, "Zizzi is near Raja Indian Cuisine.") == ((), (), (("name", "Giraffe"),))
    assert _only("name[The Eagle]", "Eagle is nice.") == ((), (), ())           # "the" optional
    assert _only("name[Aromi]", "Aromi is near Burger King.") == ((), ("near",), ())
    assert _only("name[Aromi]", "Aromi is near Old Town Hall.") == ((), ("near",), ())
    assert _only("name[Aromi]", "Aromi is near the river.") == ((), ("area",), ())


def test_added_missing_and_ser():
    mr = "name[Aromi], eatType[pub], area[riverside]"
    r = slot_errors(mr, "Aromi is an expensive Italian pub.")
    assert r.missing == ("area",) and set(r.added) == {"priceRange", "food"} and r.wrong == ()
    assert r.ser == pytest.approx(3 / 3)
    r = slot_errors("name[Aromi], area[city centre], area[riverside]", "Aromi is in the city centre.")
    assert (r.slots, r.missing, r.wrong) == (3, ("area",), ())


# ------------------------------------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("text", ["", "   \n\t ", "x" * 10_000])
def test_bad_hypotheses_miss_every_slot(text):
    r = slot_errors(FULL, text)
    assert (r.slots, len(r.missing), r.added, r.wrong, r.ser) == (8, 8, (), (), 1.0)
    assert entity_coverage("(A_b | r | C), (C | r2 | D)", text) == 0.0


def test_long_hypothesis_is_scored():
    text = "The Eagle is a pub. " * 500          # 10,000 characters
    assert len(text) == 10_000
    r = slot_errors("name[The Eagle], eatType[coffee shop]", text)
    assert r.wrong == (("eatType", "coffee shop", "pub"),) and r.missing == ()


def test_unknown_attribute_reported_not_counted():
    r = slot_errors("name[Aromi], cuisine[Thai], eatType[pub], ambience[quiet]", "Aromi is a pub.")
    assert r.unknown_attributes == ("cuisine", "ambience")
    assert (r.slots, r.errors) == (2, 0)
    assert r.as_dict()["unknown_attributes"] == ["cuisine", "ambience"]
    with pytest.raises(TypeError):
        slot_errors(FULL, None)


# ------------------------------------------------------------------------------------------------ entities

def test_entity_coverage_by_hand():
    triples = '(Liselotte_Grschebina | deathPlace | Israel), (Israel | officialLanguage | "Modern_Hebrew")'
    assert parse_triples(triples)[1] == ("Israel", "officialLanguage", '"Modern_Hebrew"')
    assert triple_entities(triples) == ["liselotte grschebina", "israel", "modern hebrew"]
    assert entity_coverage(triples, "Liselotte Grschebina died in ISRAEL.") == pytest.approx(2 / 3)
    assert entity_coverage(triples, "Liselotte Grschebina died in Israel, where Modern Hebrew is spoken.") == 1.0
    assert entity_coverage(triples, "Israeli") == 0.0              # whole words only
    assert entity_matches(triples, "israel") == {"liselotte grschebina": False, "israel": True,
                                                 "modern hebrew": False}
    with pytest.raises(ValueError, match="no '\\(subject"):
        entity_coverage("not triples", "text")


# ------------------------------------------------------------------------------------------------ accuracy

# Thresholds: the values measured on the labelled set when the matcher was written (recorded in
# SLOT_MATCHER_ACCURACY / ENTITY_COVERAGE_ACCURACY), rounded down to two decimals; a change that loses accuracy
# fails here.
SLOT_PRECISION_MIN, SLOT_RECALL_MIN = 0.98, 0.96
ENTITY_PRECISION_MIN, ENTITY_RECALL_MIN = 0.77, 1.0


def _slot_counts():
    tp = fp = fn = 0
    for item in LABELS["e2e"]:
        r = slot_errors(item["input"], item["output"])
        pred = ({(a, "missing") for a in r.missing} | {(a, "added") for a in r.added}
                | {(w[0], "wrong") for w in r.wrong})
        hand = ({(a, "missing") for a, v in item["slots"].items() if v == "missing"}
                | {(a, "wrong") for a, v in item["slots"].items() if v in ("wrong", "negated")}
                | {(a, "added") for a in item["added"]})
        tp, fp, fn = tp + len(pred & hand), fp + len(pred - hand), fn + len(hand - pred)
    return tp, fp, fn


def test_labelled_set_is_large_and_varied():
    e2e, web = LABELS["e2e"], LABELS["webnlg"]
    assert len(e2e) >= 60 and len(web) >= 30
    kinds = [v for item in e2e for v in item["slots"].values()]
    for kind in ("correct", "missing", "wrong", "negated"):
        assert kinds.count(kind) >= 4, kind
    assert sum(len(item["added"]) for item in e2e) >= 4
    assert len({item["source"].split("|")[1] for item in e2e}) >= 8          # many methods
    assert sum(not v for item in web for _, v in item["entities"]) >= 20


def test_slot_matcher_precision_recall():
    tp, fp, fn = _slot_counts()
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision == pytest.approx(SLOT_MATCHER_ACCURACY["precision"])
    assert recall == pytest.approx(SLOT_MATCHER_ACCURACY["recall"])
    assert precision >= SLOT_PRECISION_MIN and recall >= SLOT_RECALL_MIN


def test_entity_coverage_precision_recall():
    tp = fp = fn = 0
    for item in LABELS["webnlg"]:
        found = entity_matches(item["input"], item["output"])
        for entity, expressed in item["entities"]:
            flagged = not found[_entity(entity)]          # "not found": a predicted omission
            tp += flagged and not expressed
            fp += flagged and expressed
            fn += (not flagged) and not expressed
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision == pytest.approx(ENTITY_COVERAGE_ACCURACY["precision"])
    assert recall == pytest.approx(ENTITY_COVERAGE_ACCURACY["recall"])
    assert precision >= ENTITY_PRECISION_MIN and recall >= ENTITY_RECALL_MIN
