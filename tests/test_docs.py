"""The docs cannot go stale silently: every test they name exists, every
relative link resolves, every repository path they name is there, none
points at notes outside the repository, and every table row has its header's
number of cells.

Covers README.md and docs/*.md. A `tests/test_x.py::name` reference must name
a test function (or `Class::method`) defined in that file; a reference without
`::` only needs the file.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# `tests/test_x.py` optionally followed by `::name` or `::Class::name`, and a
# parametrize id in brackets, which is not part of the name.
TEST_REF = re.compile(r"tests/([\w/]+\.py)((?:::\w+)*)")
# A markdown link: [text](target). Images and reference-style links are not used.
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
# A path inside the repository, written in backticks or plain text.
TOP_FOLDERS = ("tritonlite", "workers", "shm", "protos", "scripts", "tests", "examples",
               "deploy", "docs")
REPO_PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP_FOLDERS) + r")/[\w./-]*)")
# Places a reader of the repository cannot follow: the workplace's folders and
# the notes kept outside the repository.
OUTSIDE = re.compile(r"\.\./shared|/work/|closing notes|session notes|notes outside")


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@functools.cache
def _defined_names(test_file: Path) -> frozenset[str]:
    """Top-level functions and classes, and `Class::method` for methods."""
    tree = ast.parse(test_file.read_text(), filename=str(test_file))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}::{item.name}")
    return frozenset(names)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def _anchors(doc: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    in_fence = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if match and not in_fence:
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def test_references_find_the_docs():
    # The checks below must see the references they are meant to check.
    assert (ROOT / "docs" / "compatibility.md") in DOCS
    refs = [m.group(0) for doc in DOCS for m in TEST_REF.finditer(doc.read_text())]
    assert any("::" in ref for ref in refs), "no tests/x.py::name reference was found"
    assert _slug("HTTP/2 limits") == "http2-limits"
    assert _slug("The in-process API: `tritonlite.Server`") == "the-in-process-api-tritonliteserver"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_named_tests_exist(doc: Path):
    missing = []
    for match in TEST_REF.finditer(doc.read_text()):
        test_file = ROOT / "tests" / match.group(1)
        name = match.group(2).removeprefix("::")
        if not test_file.is_file():
            missing.append(match.group(0))
        elif name and name not in _defined_names(test_file):
            missing.append(match.group(0))
    assert missing == [], f"{_doc_id(doc)} names tests that do not exist"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_relative_links_resolve(doc: Path):
    broken = []
    for match in LINK.finditer(doc.read_text()):
        target = match.group(1)
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        where = (doc.parent / path_part).resolve() if path_part else doc
        if not where.exists() or ROOT not in (where, *where.parents):
            broken.append(target)
        elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
            broken.append(target)
    assert broken == [], f"{_doc_id(doc)} links to what does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_repository_paths_exist(doc: Path):
    missing = []
    for match in REPO_PATH.finditer(doc.read_text()):
        path = match.group(1).rstrip(".-/")
        if not (ROOT / path).exists():
            missing.append(path)
    assert missing == [], f"{_doc_id(doc)} names paths that are not in the repository"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_no_pointer_outside_the_repository(doc: Path):
    found = [
        f"line {n}: {line.strip()[:120]}"
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == [], f"{_doc_id(doc)} points outside the repository"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_table_rows_have_the_header_s_columns(doc: Path):
    # A stray '|' (an empty cell written twice, a pipe in a note) shifts the
    # cells of a row under the wrong headings without any error.
    bad = []
    header_cells = None
    in_fence = False
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or not line.lstrip().startswith("|"):
            header_cells = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line.strip())) - 1
        if header_cells is None:
            header_cells = cells
        elif cells != header_cells:
            bad.append(f"line {n}: {cells} cells, header has {header_cells}")
    assert bad == [], f"{_doc_id(doc)} has table rows that do not fit their header"
