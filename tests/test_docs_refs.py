"""Every test a document names (``tests/file.py::test_name``) exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def names_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_named_tests_exist(doc: Path) -> None:
    missing = [
        f"{path}::{name}"
        for path, name in REF.findall(doc.read_text())
        if not (ROOT / path).exists() or name not in names_in(ROOT / path)
    ]
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"


def test_reliability_doc_names_tests() -> None:
    assert len(REF.findall((ROOT / "docs" / "reliability.md").read_text())) >= 20
