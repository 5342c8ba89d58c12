"""Semantic fidelity of generated texts to their inputs: E2E's slot error rate and WebNLG/DART entity coverage.

**Slot error rate (E2E).** After Dušek, Howcroft and Rieser (INLG 2019, "Semantic Noise Matters for Neural
Natural Language Generation"): a rule-based matcher finds, for each of the 8 E2E attributes (name, eatType,
food, priceRange, customer rating, area, familyFriendly, near), the values the text expresses, through families
of surface forms per value ("kid friendly", "not family-friendly", "£20-25", "moderately priced", "high customer
rating", "5 out of 5", ...). Compared with the input's meaning representation (MR), each MR attribute is

* *correct* when the text expresses its value (or a value of the same family: the E2E data use "cheap" and "less
  than £20", "moderate" and "£20-25", "high" and "more than £30", "low" and "1 out of 5", "average" and "3 out of
  5", "high" and "5 out of 5" interchangeably);
* *wrong* when the text expresses the attribute with another value only (a negation counts as the opposite
  value: "not family-friendly" for ``familyFriendly[yes]`` is wrong);
* *missing* when the text does not express the attribute;

and an attribute the text expresses that the MR does not hold is *added*. SER = (missing + added + wrong) / the
number of attributes in the MR; it can exceed 1 when many attributes are added. Venue names (``name``,
``near``) match their literal value (case-, accent- and "the"-insensitive); a known E2E venue other than the
MR's in the text is a wrong value, and an added ``near`` is a known venue or a capitalised name after "near",
"close to", "next to", "beside", "opposite" or "not far from". Venue names are masked before the other
attributes are matched ("Raja Indian Cuisine" is not Indian food). Repeated mentions are not errors.

The matcher is our own, written for the outputs of this project's models; its value families follow the
authors' published matcher for the same data. Its accuracy on a hand-labelled set of this project's outputs
(``tests/experiments/data/semantic_labels.json``) is :data:`SLOT_MATCHER_ACCURACY`.

**Entity coverage (WebNLG, DART).** The share of the distinct subjects and objects of the input triples
``(subject | relation | object), ...`` found in the output as substrings, after normalising both sides
(underscores as spaces, double quotes and the quotes around a literal stripped, case-folded, runs of whitespace
as one space). A rough check of omissions, the usual one; it cannot see a wrong relation or a paraphrased entity
("United States" for "U.S."). Its agreement with hand labels is :data:`ENTITY_COVERAGE_ACCURACY`.

Bad input: an empty, all-whitespace or very long hypothesis is scored like any other (an empty text misses every
slot: SER 1; covers no entity: coverage 0); an MR attribute the matcher does not know is reported by name in
:attr:`SlotErrors.unknown_attributes` and not counted. An MR or triple set with nothing parseable in it is a
``ValueError``.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import Dict, FrozenSet, List, Optional, Tuple

__all__ = ["ATTRIBUTES", "SlotErrors", "parse_mr", "slot_errors", "slot_error_rate", "parse_triples",
           "triple_entities", "entity_coverage", "SLOT_MATCHER_ACCURACY", "ENTITY_COVERAGE_ACCURACY"]

#: The 8 E2E attributes, in the data's order, under their canonical names.
ATTRIBUTES = ("name", "eatType", "food", "priceRange", "customerRating", "area", "familyFriendly", "near")

#: The slot matcher's error detection against the hand-labelled set (74 E2E outputs of 11 methods and the base
#: model, 329 MR slots and 11 added slots, of which 90 errors: 67 missing, 8 wrong, 4 negated, 11 added), as
#: measured in tests/experiments/test_semantic.py: an error counts as found when the matcher reports the same
#: attribute with the same kind (missing / added / wrong, a negation being wrong). Precision 87 / 88, recall
#: 87 / 90. Its misses: a wrong name given as missing, an added "in the heart of the city" area, a near venue
#: named as a place ("in the Sorrento area").
SLOT_MATCHER_ACCURACY: Dict[str, float] = {"precision": 87 / 88, "recall": 87 / 90, "outputs": 74, "errors": 90}
#: Entity coverage's "not found" decisions against the hand-labelled WebNLG set (32 outputs, 159 entities, 62
#: not expressed): precision 62 / 80, recall 62 / 62. Its false "not found": paraphrases (dates written out,
#: "mathematician" for Mathematics, disambiguation suffixes such as "(album)" left out, "Robert A. Stern").
ENTITY_COVERAGE_ACCURACY: Dict[str, float] = {"precision": 62 / 80, "recall": 1.0, "outputs": 32, "entities": 159}

_ALIASES = {
    "name": "name", "eattype": "eatType", "food": "food", "pricerange": "priceRange",
    "customerrating": "customerRating", "rating": "customerRating", "area": "area",
    "familyfriendly": "familyFriendly", "near": "near",
}

# Venue names of the E2E data (training, development and test MRs): masked before other attributes are matched;
# a known venue other than the MR's is a wrong (or added) name / near value.
_VENUES = (
    "Alimentum", "Aromi", "Bibimbap House", "Blue Spice", "Browns Cambridge", "Clowns", "Cocum", "Cotto",
    "Fitzbillies", "Giraffe", "Green Man", "Loch Fyne", "Midsummer House", "Strada", "Taste of Cambridge",
    "The Cambridge Blue", "The Cricketers", "The Dumpling Tree", "The Eagle", "The Golden Curry",
    "The Golden Palace", "The Mill", "The Olive Grove", "The Phoenix", "The Plough", "The Punter", "The Rice Boat",
    "The Twenty Two", "The Vaults", "The Waterman", "The Wrestlers", "Travellers Rest Beefeater", "Wildwood",
    "Zizzi", "All Bar One", "Avalon", "Burger King", "Café Adriatic", "Café Brazil", "Café Rouge", "Café Sicilia",
    "Clare Hall", "Crowne Plaza Hotel", "Express by Holiday Inn", "Rainbow Vegetarian Café", "Raja Indian Cuisine",
    "Ranch", "The Bakers", "The Portland Arms", "The Six Bells", "The Sorrento", "Yippee Noodle Bar",
)

# Value classes: each MR value belongs to one class; a pattern in the text names the set of classes it expresses.
_VALUE_CLASS = {
    "eatType": {"coffee shop": "coffee shop", "pub": "pub", "restaurant": "restaurant"},
    "food": {"chinese": "chinese", "english": "english", "fast food": "fast food", "french": "french",
             "indian": "indian", "italian": "italian", "japanese": "japanese"},
    "priceRange": {"cheap": "low", "less than £20": "low", "moderate": "mid", "£20-25": "mid", "high": "high",
                   "more than £30": "high"},
    "customerRating": {"low": "low", "1 out of 5": "low", "average": "mid", "3 out of 5": "mid", "high": "high",
                       "5 out of 5": "high"},
    "area": {"riverside": "riverside", "city centre": "city centre"},
    "familyFriendly": {"yes": "yes", "no": "no"},
}

_NUM = r"(?:1|2|3|4|5|one|two|three|four|five)"
_NUM_CLASS = {"1": "low", "one": "low", "3": "mid", "three": "mid", "5": "high", "five": "high",
              "2": "other", "two": "other", "4": "other", "four": "other"}
_RATING = r"(?:customer[- ])?(?:rat(?:ing|ings|ed|es)|reviews?|review score|scores?)"
_KIDS = r"(?:famil(?:y|ies)|kids?|child(?:ren)?)"

# (attribute, pattern, classes) in the order they are tried; a later pattern overlapping an earlier match of the
# same attribute is dropped, so negations and specific forms come first.
_PATTERNS: List[Tuple[str, str, FrozenSet[str]]] = []


def _add(attribute: str, classes, *patterns: str) -> None:
    for pattern in patterns:
        _PATTERNS.append((attribute, pattern, frozenset([classes] if isinstance(classes, str) else classes)))


# familyFriendly: negations first
_add("familyFriendly", "no",
     rf"(?:not|isn't|is not|isnt|non|no)[- ]+(?:\w+[- ]+){{0,2}}?{_KIDS}[- ]+(?:friendly|oriented|orientated)",
     rf"{_KIDS}[- ]+unfriendly", r"adults?[- ]+only", r"only for adults", r"for adults only",
     rf"(?:not|isn't|is not)(?: \w+)? (?:suitable|good|ideal|appropriate|recommended|friendly|welcoming|"
     rf"open|meant|designed|intended)(?: for| to)? (?:the )?(?:whole )?{_KIDS}",
     rf"(?:not|isn't|is not) (?:a )?(?:place|venue|spot) for (?:the )?{_KIDS}",
     rf"{_KIDS} (?:are|is) not (?:welcome|allowed|permitted)", rf"{_KIDS} (?:aren't|isn't) (?:welcome|allowed)",
     rf"(?:does not|doesn't|do not|don't) (?:welcome|allow|cater (?:to|for)|accommodate|accept) (?:\w+ ){{0,2}}?"
     rf"{_KIDS}", rf"\bno (?:kids|children)\b")
_add("familyFriendly", "yes",
     rf"{_KIDS}[- ]+(?:friendly|oriented|orientated)",
     rf"(?:for|welcomes?|welcoming|suitable for|good for|great for|ideal for|caters? (?:to|for)|perfect for|"
     rf"allows?|accommodates?|fun for) (?:the )?(?:whole )?(?:entire )?{_KIDS}",
     rf"{_KIDS} (?:are|is) (?:welcome|allowed)", rf"bring (?:the |your )?(?:whole )?{_KIDS}")
# eatType
_add("eatType", "coffee shop", r"coffee[- ]?shops?", r"coffee[- ]?houses?", r"caf[eé]s?\b")
_add("eatType", "pub", r"pubs?", r"gastropubs?")
_add("eatType", "restaurant", r"restaurants?")
# food
_add("food", "chinese", r"chinese")
_add("food", "english", r"english", r"british")
_add("food", "fast food", r"fast[- ]+food")
_add("food", "french", r"french")
_add("food", "indian", r"indian")
_add("food", "italian", r"italian")
_add("food", "japanese", r"japanese", r"sushi")
_add("food", "other", r"mexican", r"thai", r"spanish", r"greek", r"korean", r"vietnamese", r"mediterranean",
     r"turkish", r"german", r"american", r"lebanese", r"middle[- ]eastern", r"asian", r"european", r"seafood",
     r"vegetarian", r"vegan")
# priceRange: negations and numbers first
_add("priceRange", ("mid", "high"), r"(?:not|isn't|is not|never) (?:\w+ )?(?:cheap|inexpensive)")
_add("priceRange", ("low", "mid"), r"(?:not|isn't|is not|never) (?:\w+ )?(?:expensive|pricey|costly)")
_add("priceRange", "low", r"(?:less than|under|below|cheaper than|up to) £ ?20\b",
     r"(?:less than|under|below) (?:20|twenty) (?:pounds|gbp)")
_add("priceRange", "mid", r"£ ?20 ?(?:-|–|to|and) ?£? ?25\b", r"\b20 ?(?:-|–|to) ?25 (?:pounds|gbp)",
     r"between £ ?20 and £? ?25")
_add("priceRange", "high", r"(?:more than|over|above|upwards of|at least) £ ?30\b", r"£ ?30 ?\+",
     r"(?:more than|over|above) (?:30|thirty) (?:pounds|gbp)")
_add("priceRange", "low", r"(?:inexpensive|cheap)(?:ly|er|est)?", r"low[- ]+(?:price[ds]?|cost)",
     r"affordabl[ey]", r"budget[- ]friendly", r"on a budget",
     r"(?:prices?|price range|pricing)(?: \w+){0,3} (?:low|cheap)")
_add("priceRange", "mid", r"(?:moderate(?:ly)?|reasonabl[ey]|average|fair(?:ly)?)[- ]+pric(?:e[ds]?|ing)",
     r"mid[- ]+(?:range|priced)", r"(?:prices?|price range|pricing)(?: \w+){0,3} (?:moderate|average|reasonable)",
     r"moderate price range")
_add("priceRange", "high", r"expensive", r"pricey", r"costly", r"high[- ]+(?:price[ds]?|cost|end)",
     r"upscale", r"(?:prices?|price range|pricing)(?: \w+){0,3} high", r"premium pric(?:es|ing|ed)")
# customerRating: numbers first, then words next to a rating noun
_add("customerRating", "low", rf"\b(?:1|one)(?: out)? of (?:5|five)\b", rf"\b(?:1|one)[- ]stars?\b")
_add("customerRating", "mid", rf"\b(?:3|three)(?: out)? of (?:5|five)\b", rf"\b(?:3|three)[- ]stars?\b")
_add("customerRating", "high", rf"\b(?:5|five)(?: out)? of (?:5|five)\b", rf"\b(?:5|five)[- ]stars?\b")
_add("customerRating", "other", rf"\b(?:2|two|4|four)(?: out)? of (?:5|five)\b", rf"\b(?:2|two|4|four)[- ]stars?\b")
_add("customerRating", "low",
     rf"(?:low|poor|bad|badly|poorly|lowly)(?:[ -]+\w+){{0,2}}?[ -]+{_RATING}",
     rf"{_RATING}(?: \w+){{0,3}} (?:low|poor|bad)")
_add("customerRating", "mid",
     rf"(?:average|moderate|mediocre|decent|okay|ok)(?:ly)?(?:[ -]+\w+){{0,2}}?[ -]+{_RATING}",
     rf"{_RATING}(?: \w+){{0,3}} (?:average|moderate|mediocre)")
_add("customerRating", "high",
     rf"(?:high|highly|excellent|great|top|very good|well|best|outstanding|good)(?:ly)?(?:[ -]+\w+){{0,2}}?[ -]+"
     rf"{_RATING}", rf"{_RATING}(?: \w+){{0,3}} (?:high|excellent|great)")
# area
_add("area", "riverside", r"river[- ]?side", r"(?:by|near|on|along|beside|next to|close to|at|alongside|overlooking)"
     r" the river", r"waterfront", r"river[- ]?front")
_add("area", "city centre", r"(?:city|town) cent(?:re|er)", r"cent(?:re|er) of (?:the )?(?:city|town)",
     r"downtown", r"in the cent(?:re|er)", r"city[- ]cent(?:re|er)")

_COMPILED = [(a, re.compile(r"(?<!\w)" + p + r"(?!\w)", re.IGNORECASE), c) for a, p, c in _PATTERNS]
_NEAR_PHRASE = re.compile(r"\b(?:near|close to|next to|beside|opposite|not far from|across from) (?:the )?"
                          r"([A-Z][\w'’&.-]*(?: [A-Z][\w'’&.-]*)*)")


def _fold(text: str) -> str:
    """Case-folded, accent-stripped, apostrophes unified, whitespace collapsed (one character per character kept
    where possible, so spans stay meaningful)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("’", "'").replace("‘", "'").replace("–", "-").replace("—", "-")
    return " ".join(text.split()).casefold()


def _venue_regex(value: str) -> re.Pattern:
    folded = _fold(value)
    if folded.startswith("the "):
        folded = folded[4:]
    return re.compile(r"(?<!\w)(?:the )?" + re.escape(folded) + r"(?!\w)")


def parse_mr(text: str) -> Dict[str, str]:
    """Parse an E2E meaning representation into ``{attribute: value}`` (an attribute given twice keeps its first
    value here; :func:`slot_errors` checks every pair, :func:`mr_pairs`).

    Accepts the official CSV form ``name[The Eagle], eatType[coffee shop], customer rating[low], ...`` and the
    ``name: The Eagle, eatType: coffee shop, ...`` form. Attribute names are matched case-, space- and
    underscore-insensitively (``customer rating``, ``customerRating`` and ``customer_rating`` are
    ``customerRating``); attributes the matcher does not know keep their name as written.

    Raises:
        TypeError: ``text`` is not a str.
        ValueError: no ``attribute[value]`` or ``attribute: value`` pair in ``text``.
    """
    out: Dict[str, str] = {}
    for key, value in mr_pairs(text):
        out.setdefault(key, value)
    return out


def mr_pairs(text: str) -> List[Tuple[str, str]]:
    """The ``(attribute, value)`` pairs of an E2E MR in order, repeats kept (the forms of :func:`parse_mr`).

    Raises:
        TypeError / ValueError: as :func:`parse_mr`.
    """
    if not isinstance(text, str):
        raise TypeError(f"an MR must be a str, got {type(text).__name__}")
    pairs = re.findall(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]", text)
    if not pairs:
        pairs = re.findall(r"(?:^|,)\s*([A-Za-z][A-Za-z _]*?)\s*:\s*(.*?)\s*(?=,\s*[A-Za-z][A-Za-z _]*?\s*:|$)",
                           text.strip())
    if not pairs:
        raise ValueError(f"no 'attribute[value]' or 'attribute: value' pair in the MR {text[:200]!r}")
    return [(_ALIASES.get(re.sub(r"[\s_]+", "", key).casefold(), key.strip()), value.strip())
            for key, value in pairs]


@dataclasses.dataclass(frozen=True)
class SlotErrors:
    """The slot check of one output against its MR.

    Attributes:
        slots: attributes of the MR the matcher knows (the SER's denominator; >= 0).
        missing: MR attributes the text does not express.
        added: attributes the text expresses that the MR does not hold.
        wrong: ``(attribute, MR value, what the text says)`` for attributes expressed with another value only
            (a negation included).
        unknown_attributes: MR attributes the matcher does not know (not counted).
    """

    slots: int
    missing: Tuple[str, ...] = ()
    added: Tuple[str, ...] = ()
    wrong: Tuple[Tuple[str, str, str], ...] = ()
    unknown_attributes: Tuple[str, ...] = ()

    @property
    def errors(self) -> int:
        """missing + added + wrong."""
        return len(self.missing) + len(self.added) + len(self.wrong)

    @property
    def ser(self) -> float:
        """(missing + added + wrong) / slots, >= 0 (may exceed 1); 0 when the MR has no known slot and the text
        adds none, else the error count when it has no known slot."""
        return self.errors / self.slots if self.slots else float(self.errors)

    def as_dict(self) -> dict:
        """JSON-ready form: ``slots``, ``missing``, ``added``, ``wrong`` (lists of [attribute, expected, found]),
        ``unknown_attributes``, ``ser``."""
        return {"slots": self.slots, "missing": list(self.missing), "added": list(self.added),
                "wrong": [list(w) for w in self.wrong], "unknown_attributes": list(self.unknown_attributes),
                "ser": self.ser}


def _find_venues(folded: str, values) -> List[Tuple[str, int, int]]:
    """``(value, start, end)`` of each venue name in ``values`` found in the folded text, longest first, without
    overlaps."""
    found: List[Tuple[str, int, int]] = []
    for value in sorted(set(values), key=lambda v: -len(v)):
        for m in _venue_regex(value).finditer(folded):
            if all(m.end() <= s or m.start() >= e for _, s, e in found):
                found.append((value, m.start(), m.end()))
    return found


def _matches(folded: str) -> Dict[str, List[FrozenSet[str]]]:
    """Per attribute, the class sets of the non-overlapping pattern matches in the (venue-masked) text."""
    spans: Dict[str, List[Tuple[int, int]]] = {}
    out: Dict[str, List[FrozenSet[str]]] = {}
    for attribute, regex, classes in _COMPILED:
        for m in regex.finditer(folded):
            taken = spans.setdefault(attribute, [])
            if any(m.start() < e and m.end() > s for s, e in taken):
                continue
            taken.append((m.start(), m.end()))
            out.setdefault(attribute, []).append(classes)
    return out


def slot_errors(mr, hypothesis: str) -> SlotErrors:
    """Check ``hypothesis`` against the E2E MR ``mr`` (a str in a form :func:`parse_mr` reads, or its dict).

    Returns:
        :class:`SlotErrors` (see the module docstring for the rules).

    Raises:
        TypeError: ``hypothesis`` is not a str. ValueError / TypeError: an unparseable ``mr`` (:func:`parse_mr`).
    """
    if not isinstance(hypothesis, str):
        raise TypeError(f"hypothesis must be a str, got {type(hypothesis).__name__}")
    pairs = mr_pairs(mr) if isinstance(mr, str) else [(str(k), str(v)) for k, v in dict(mr).items()]
    unknown = tuple(dict.fromkeys(k for k, _ in pairs if k not in ATTRIBUTES))
    known = [(k, v) for k, v in pairs if k in ATTRIBUTES]
    attrs = {k for k, _ in known}
    raw = " ".join(hypothesis.split())
    folded = _fold(raw)
    missing: List[str] = []
    added: List[str] = []
    wrong: List[Tuple[str, str, str]] = []

    # venue names: the MR's own first, then the other known venues
    mr_venues = [_fold(v) for k, v in known if k in ("name", "near")]
    venues = _find_venues(folded, [v for k, v in known if k in ("name", "near")]
                          + [v for v in _VENUES if _fold(v) not in mr_venues])
    found_values = {_fold(v) for v, _, _ in venues}
    others = [v for v, _, _ in venues if _fold(v) not in mr_venues]
    for key, value in known:
        if key not in ("name", "near") or _fold(value) in found_values:
            continue
        if others:
            wrong.append((key, value, others.pop(0)))
        else:
            missing.append(key)
    if "near" not in attrs:
        near_phrase = [m.group(1) for m in _NEAR_PHRASE.finditer(raw)
                       if not re.match(r"(?i)(?:river|city|town|centre|center)\b", m.group(1))]
        if others or near_phrase:
            added.append("near")
    masked = folded
    for _, s, e in venues:
        masked = masked[:s] + " " * (e - s) + masked[e:]

    found = _matches(masked)
    for attribute in ATTRIBUTES[1:-1]:
        classes = found.get(attribute, [])
        if attribute not in attrs:
            if classes:
                added.append(attribute)
            continue
        values = [v for k, v in known if k == attribute]
        expected_all = {_VALUE_CLASS[attribute].get(_fold(v)) for v in values}
        said = set().union(*classes) if classes else set()
        for value in values:
            expected = _VALUE_CLASS[attribute].get(_fold(value))
            if expected is None:        # a value outside the E2E value set: its literal form, else missing
                if not re.search(r"(?<!\w)" + re.escape(_fold(value)) + r"(?!\w)", masked):
                    missing.append(attribute)
            elif any(expected in c for c in classes):
                continue
            elif any(not (c & expected_all) for c in classes):
                wrong.append((attribute, value, "/".join(sorted(said - expected_all))))
            else:
                missing.append(attribute)
    return SlotErrors(slots=len(known), missing=tuple(missing), added=tuple(added), wrong=tuple(wrong),
                      unknown_attributes=unknown)


def slot_error_rate(mr, hypothesis: str) -> float:
    """:attr:`SlotErrors.ser` of :func:`slot_errors`."""
    return slot_errors(mr, hypothesis).ser


def parse_triples(text: str) -> List[Tuple[str, str, str]]:
    """``[(subject, relation, object), ...]`` of a WebNLG/DART input ``"(s | r | o), (s | r | o)"``.

    Raises:
        TypeError: ``text`` is not a str. ValueError: no triple with three ``|``-separated parts.
    """
    if not isinstance(text, str):
        raise TypeError(f"triples must be a str, got {type(text).__name__}")
    body = text.strip()
    if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
    triples = []
    for part in body.split("), ("):
        pieces = [p.strip() for p in part.split(" | ")]
        if len(pieces) == 3 and pieces[0] and pieces[2]:
            triples.append((pieces[0], pieces[1], pieces[2]))
    if not triples:
        raise ValueError(f"no '(subject | relation | object)' triple in {text[:200]!r}")
    return triples


def _entity(text: str) -> str:
    text = text.replace("_", " ").replace('"', " ")
    text = re.sub(r"@[a-z]{2}\b", " ", text)      # a literal's language tag
    text = re.sub(r"\^\^\S+", " ", text)         # a literal's datatype
    text = text.strip().strip("'").strip()
    return " ".join(_fold(text).split())


def triple_entities(text: str) -> List[str]:
    """The distinct normalised subjects and objects of a triple set, in order of first appearance."""
    seen: Dict[str, None] = {}
    for s, _, o in parse_triples(text):
        for e in (_entity(s), _entity(o)):
            if e:
                seen.setdefault(e, None)
    return list(seen)


def entity_coverage(triples: str, hypothesis: str) -> float:
    """Share (0-1) of :func:`triple_entities` found in the normalised ``hypothesis`` (see the module docstring).

    Raises:
        TypeError: ``hypothesis`` is not a str. ValueError / TypeError: unparseable ``triples``.
    """
    if not isinstance(hypothesis, str):
        raise TypeError(f"hypothesis must be a str, got {type(hypothesis).__name__}")
    entities = triple_entities(triples)
    if not entities:
        raise ValueError(f"no entity in {triples[:200]!r}")
    text = " ".join(_fold(hypothesis.replace("_", " ")).split())
    found = sum(1 for e in entities if re.search(r"(?<!\w)" + re.escape(e) + r"(?!\w)", text))
    return found / len(entities)


def entity_matches(triples: str, hypothesis: str) -> Dict[str, bool]:
    """``{entity: found}`` for each entity of :func:`triple_entities` (what :func:`entity_coverage` counts)."""
    entities = triple_entities(triples)
    text = " ".join(_fold(hypothesis.replace("_", " ")).split())
    return {e: bool(re.search(r"(?<!\w)" + re.escape(e) + r"(?!\w)", text)) for e in entities}
