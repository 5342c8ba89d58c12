"""The benchmark files: the vendored public releases (checksummed), a user's own copy of them, and JSONL.

The package ships four public release files, xz-compressed, under ``qaa/experiments/vendored/`` (its
``README.md`` gives their sources, licences and citations):

==================================  ===================================================  ==============
file                                what                                                 licence
==================================  ===================================================  ==============
``e2e/devset.csv``                  E2E NLG Challenge development set (547 MRs)          CC BY-SA 4.0
``e2e/testset_w_refs.csv``          E2E official test set with references (630 MRs)      CC BY-SA 4.0
``webnlg2017/dev.json``             WebNLG 2017 development set (872 triple sets)        CC BY-NC-SA 4.0
``dart/dart-v1.1.1-full-dev.json``  DART v1.1.1 development set (2,768 triple sets)       MIT
==================================  ===================================================  ==============

:data:`VENDORED` records the SHA-256 of each release file as published (of the decompressed bytes, so the
check also proves the copy is byte-identical to the release); :func:`read_file` verifies it on every read and
raises :class:`DataError` naming the file on a mismatch (never a silent fallback). A user's own copy (``--data
FOLDER``) is read from the same file names, uncompressed or ``.xz``; its checksums are recorded, not checked.

The readers turn each format into :class:`qaa.experiments.data.Example` lists (one per unique input, every
reference of that input kept, repeated references once, in order of first appearance):

* E2E CSV (columns ``mr``, ``ref``): the input is the MR as written, e.g. ``name[Alimentum], area[city
  centre], familyFriendly[no]``.
* WebNLG 2017 JSON (``entries[i][k]`` with ``category``, ``modifiedtripleset``, ``lexicalisations[].lex``) and
  DART JSON (``tripleset``, ``annotations[].text``, ``annotations[].source``): the input is the triple set as
  ``(subject | relation | object), (subject | relation | object)``, in the file's order, entity names as written
  (WebNLG's keep their underscores).
* JSONL: one ``{"input": str, "references": [str, ...]}`` object per line (``"reference": str`` also accepted).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import lzma
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .data import Example

__all__ = ["DataError", "VendoredFile", "VENDORED", "read_file", "sha256_bytes", "read_e2e_csv",
           "read_webnlg_json", "read_dart_json", "read_jsonl", "triples_text", "DART_OPEN_DOMAIN_SOURCES"]


class DataError(ValueError):
    """A data file is missing, corrupted (checksum mismatch) or not in its expected format. The message names
    the file."""


@dataclass(frozen=True)
class VendoredFile:
    """One vendored release file: its path below ``vendored/`` (without ``.xz``), the SHA-256 of the release's
    bytes, and what it is."""

    path: str
    sha256: str
    description: str
    licence: str


#: The vendored files, by path; checksums from the releases (see ``vendored/README.md``).
VENDORED: Dict[str, VendoredFile] = {f.path: f for f in (
    VendoredFile("e2e/devset.csv", "fc26b78cdb849c80545f513b223d1e051138b43882eeb79e3eb153e689c864f9",
                 "E2E NLG Challenge development set", "CC BY-SA 4.0"),
    VendoredFile("e2e/testset_w_refs.csv", "edc8db685e39bb9824d5bd70c18b1c9b0412d14b527aa960e2d1c8251ee15ccd",
                 "E2E NLG Challenge official test set with references", "CC BY-SA 4.0"),
    VendoredFile("webnlg2017/dev.json", "50f5a2c24d760bc84ba3e852707cd3b43b0cf2da035b425f87945a2440880488",
                 "WebNLG challenge 2017 development set", "CC BY-NC-SA 4.0 (non-commercial)"),
    VendoredFile("dart/dart-v1.1.1-full-dev.json", "5038f3543b6d59b94ac4e3f69d15a0b01d8578913f862142e7c560200dd6e434",
                 "DART v1.1.1 development set", "MIT"),
)}

#: DART annotation sources that are a new domain (the rest of DART's development set comes from E2E and WebNLG).
DART_OPEN_DOMAIN_SOURCES = ("WikiSQL_decl_sents", "WikiTableQuestions_lily", "WikiTableQuestions_mturk",
                            "WikiSQL_lily")

#: A test hook: when set, vendored files are read from this folder instead of the package (same layout).
_VENDORED_ROOT: Optional[Path] = None


def sha256_bytes(blob: bytes) -> str:
    """Hex SHA-256 of ``blob``."""
    return hashlib.sha256(blob).hexdigest()


def _vendored_root():
    return _VENDORED_ROOT if _VENDORED_ROOT is not None else resources.files("qaa.experiments") / "vendored"


def read_file(path: str, data_dir: Optional[str | Path] = None) -> Tuple[bytes, dict]:
    """The bytes of release file ``path`` (e.g. ``"e2e/devset.csv"``) and a provenance record.

    Args:
        path: a key of :data:`VENDORED`, or, with ``data_dir``, any file name below it.
        data_dir: a user's folder holding the file (as ``path``, its base name, or either with ``.xz``);
            ``None`` reads the vendored copy.

    Returns:
        ``(bytes, {"file", "sha256", "source"})``: the decompressed content, its SHA-256, and where it came from
        (``"vendored"`` or the user's path).

    Raises:
        DataError: the file is missing, cannot be decompressed, or (vendored) its checksum is not the release's.
    """
    if data_dir is None:
        entry = VENDORED.get(path)
        if entry is None:
            raise DataError(f"no vendored data file {path!r}; vendored: {', '.join(VENDORED)}")
        ref = _vendored_root() / (path + ".xz")
        try:
            raw = ref.read_bytes()
            blob = lzma.decompress(raw)
        except (OSError, lzma.LZMAError, EOFError) as e:
            raise DataError(f"vendored data file {path}.xz cannot be read ({e}); reinstall qaa") from None
        digest = sha256_bytes(blob)
        if digest != entry.sha256:
            raise DataError(f"vendored data file {path}.xz is corrupted: SHA-256 {digest} of its content, expected "
                            f"{entry.sha256} (the release's); reinstall qaa or restore the file")
        return blob, {"file": path, "sha256": digest, "source": "vendored"}
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {root}: not a folder")
    candidates = [root / path, root / Path(path).name]
    for cand in candidates + [Path(str(c) + ".xz") for c in candidates]:
        if cand.is_file():
            try:
                blob = cand.read_bytes()
                if cand.suffix == ".xz":
                    blob = lzma.decompress(blob)
            except (OSError, lzma.LZMAError, EOFError) as e:
                raise DataError(f"--data: {cand} cannot be read ({e})") from None
            return blob, {"file": str(cand), "sha256": sha256_bytes(blob), "source": str(root)}
    raise DataError(f"--data {root}: no file {Path(path).name} (or {path}, or either with .xz) in it")


def _text(blob: bytes, name: str) -> str:
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not UTF-8 text ({e})") from None


def _group(pairs: Iterable[Tuple[str, str]]) -> List[Example]:
    """``(input, reference)`` pairs -> one Example per input (stripped; empty references dropped, repeated
    ones kept once; inputs without a reference skipped), in order of first appearance."""
    grouped: Dict[str, Dict[str, None]] = {}
    for inp, ref in pairs:
        refs = grouped.setdefault(inp.strip(), {})
        if ref.strip():
            refs.setdefault(ref.strip(), None)
    return [Example(inp, tuple(refs)) for inp, refs in grouped.items() if refs and inp]


def read_e2e_csv(blob: bytes, name: str) -> List[Example]:
    """E2E CSV (header ``mr,ref``) -> Examples keyed by MR.

    Raises:
        DataError: not CSV with ``mr`` and ``ref`` columns, or no row (the message names ``name``).
    """
    try:
        reader = csv.DictReader(io.StringIO(_text(blob, name), newline=""))
        fields = reader.fieldnames or []
        missing = [c for c in ("mr", "ref") if c not in fields]
        if missing:
            raise DataError(f"{name}: missing column(s) {', '.join(missing)} (found {', '.join(fields) or 'none'}); "
                            "an E2E file has the columns mr,ref")
        rows = [(r["mr"] or "", r["ref"] or "") for r in reader]
    except csv.Error as e:
        raise DataError(f"{name}: not a readable CSV file ({e})") from None
    out = _group(rows)
    if not out:
        raise DataError(f"{name}: no (mr, ref) row with text")
    return out


def triples_text(triples: Sequence[Sequence[str]]) -> str:
    """``[(s, r, o), ...]`` -> ``"(s | r | o), (s | r | o)"`` (each part stripped)."""
    return ", ".join("(" + " | ".join(str(p).strip() for p in t) + ")" for t in triples)


def _json(blob: bytes, name: str):
    try:
        return json.loads(_text(blob, name))
    except ValueError as e:
        raise DataError(f"{name}: not valid JSON ({e})") from None


def read_webnlg_json(blob: bytes, name: str) -> Tuple[List[Example], Dict[str, Tuple[str, ...]]]:
    """WebNLG 2017 JSON -> ``(examples, categories of each input)`` (a triple set can occur in several categories:
    one does in the 2017 development set, under Food and Building).

    Raises:
        DataError: the layout is not ``{"entries": [{"<k>": {"category", "modifiedtripleset",
            "lexicalisations"}}]}``.
    """
    data = _json(blob, name)
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{name}: no 'entries' list (expected the WebNLG 2017 JSON layout)")
    pairs, category = [], {}
    try:
        for i, wrapped in enumerate(entries):
            (entry,) = wrapped.values()
            triples = [(t["subject"], t["property"], t["object"]) for t in entry["modifiedtripleset"]]
            inp = triples_text(triples)
            if entry["category"] not in category.setdefault(inp, ()):
                category[inp] += (entry["category"],)
            pairs.extend((inp, lex["lex"]) for lex in entry["lexicalisations"])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{name}: entry {i} lacks a WebNLG field ({e!r}); expected category, modifiedtripleset "
                        "(subject, property, object) and lexicalisations (lex)") from None
    return _group(pairs), category


def read_dart_json(blob: bytes, name: str, sources: Optional[Sequence[str]] = None
                   ) -> Tuple[List[Example], Dict[str, str]]:
    """DART JSON -> ``(examples, annotation source of each input)``, keeping only triple sets whose first
    annotation's source is in ``sources`` (all when ``None``).

    Raises:
        DataError: the layout is not ``[{"tripleset": [[s, r, o], ...], "annotations": [{"text", "source"}]}]``.
    """
    data = _json(blob, name)
    if not isinstance(data, list) or not data:
        raise DataError(f"{name}: expected a JSON list of DART records")
    pairs, origin = [], {}
    try:
        for i, rec in enumerate(data):
            src = rec["annotations"][0]["source"]
            if sources is not None and src not in sources:
                continue
            inp = triples_text(rec["tripleset"])
            origin.setdefault(inp, src)
            pairs.extend((inp, a["text"]) for a in rec["annotations"])
    except (IndexError, KeyError, TypeError) as e:
        raise DataError(f"{name}: record {i} lacks a DART field ({e!r}); expected tripleset and annotations "
                        "(text, source)") from None
    return _group(pairs), origin


def read_jsonl(blob: bytes, name: str) -> List[Example]:
    """JSONL, one ``{"input": str, "references": [str, ...]}`` (or ``"reference": str``) per line; blank lines
    are skipped.

    Raises:
        DataError: a line that is not such an object (the message names the file and the line number).
    """
    pairs = []
    for n, line in enumerate(_text(blob, name).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise DataError(f"{name}, line {n}: not JSON ({e})") from None
        refs = obj.get("references", obj.get("reference")) if isinstance(obj, dict) else None
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(obj, dict) or not isinstance(obj.get("input"), str) or not isinstance(refs, list) \
                or not all(isinstance(r, str) for r in refs):
            raise DataError(f"{name}, line {n}: expected {{\"input\": str, \"references\": [str, ...]}}")
        pairs.extend((obj["input"], r) for r in refs)
    out = _group(pairs)
    if not out:
        raise DataError(f"{name}: no input with a non-empty reference")
    return out
