"""The embed stays one small file that depends on nothing."""

from __future__ import annotations

import gzip
import re

from tests.subprocesses import ROOT

SNIPPET = ROOT / "static" / "liveoffers.js"


def test_the_snippet_is_at_most_5_kb_gzipped():
    size = len(gzip.compress(SNIPPET.read_bytes(), compresslevel=9))
    assert size <= 5 * 1024, f"static/liveoffers.js is {size} bytes gzipped"


def test_the_snippet_imports_nothing():
    source = SNIPPET.read_text()
    assert not re.search(r"^\s*import\b|\bimport\s*\(|\brequire\s*\(", source, re.MULTILINE)
