"""The bibliography parses and every citation in the course names an entry of it.

The strict book build fails on either, but only after executing every chapter; this says so in seconds."""

from __future__ import annotations

import re

import pybtex.database
import pybtex.errors

from conftest import ROOT

BIB = ROOT / "book" / "references.bib"
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _entries():
    pybtex.errors.set_strict_mode(True)
    return pybtex.database.parse_file(str(BIB)).entries


def test_the_bibliography_parses_strictly():
    entries = _entries()
    assert len(entries) > 50
    for key, entry in entries.items():
        assert "title" in entry.fields, f"{key}: no title"
        assert "year" in entry.fields, f"{key}: no year"


def test_every_citation_names_an_entry():
    keys = set(_entries())
    sources = [
        p
        for folder in ("book", "chapters", "solutions", "exercises")
        for p in (ROOT / folder).rglob("*")
        if p.suffix in {".md", ".ipynb"} and ".ipynb_checkpoints" not in p.parts
    ]
    assert sources
    missing = {
        (p.relative_to(ROOT).as_posix(), key.strip())
        for p in sources
        for group in CITE.findall(p.read_text())
        for key in group.split(",")
        if key.strip() not in keys
    }
    assert not missing, f"citations with no entry in book/references.bib: {sorted(missing)}"
