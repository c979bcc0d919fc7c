"""The docs name files, modules and tests that exist, and link to pages and headings that exist.

README.md and every page under docs/ are read. A file moved, a module renamed or a test renamed
fails here until the docs follow; so does a link to a page or heading that is gone.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

from service.exports.registry import FILE_FORMATS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Where a path in the docs is a path in this repository. Names under other prefixes are
# Firestore documents or Cloud Storage objects (`intakes/…`, `exports/…`, `keys/…`).
REPO_DIRS = ("service", "blueprints", "repositories", "migrations", "devtools", "tests", "bench")
PATH = re.compile(
    r"(?<![\w./{}-])((?:" + "|".join((*REPO_DIRS, "docs", r"\.ci")) + r")/[\w./{},*-]*)"
)
MODULE = re.compile(r"(?<![\w./-])((?:" + "|".join(REPO_DIRS) + r")(?:\.\w+)+(?::\w+)?)")
FILE_NAME = re.compile(
    r"(?<![\w./{}-])([\w-]+\.(?:py|md|yaml|json|toml|txt|rules|png|css|js|html))(?![\w/])"
)
MIGRATION = re.compile(r"(?<![\w/])(\d{4}_[a-z_]+)\b")  # `0004_provider_roles`
TOP_LEVEL_FILE = re.compile(r"(?<![\w./-])(Makefile|Dockerfile|\.dockerignore)\b")
TEST_REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")
TEST_NAME = re.compile(r"(?<![\w/:.])(test_\w+)(?![\w.])")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)

# Named by the docs, made by running things, and kept out of git.
GENERATED = {"tests/artifacts/"}
# File names the docs give that are no file of the repository: what an export zip holds, and
# what a documented command writes.
OUTSIDE_FILE_NAMES = {
    *(member for file_format in FILE_FORMATS for member in file_format.members),
    "bundle.json",  # docs/fhir.md's jq command
}


def _prose(text: str) -> str:
    """Drop fenced code blocks: a `# comment` in a shell block is not a heading or a link."""
    return FENCE.sub("", text)


def _expand(token: str) -> list[str]:
    """Expand `a_{en,es}.json` to both names; a `{placeholder}` matches any name."""
    parts = re.split(r"\{([^{}]*)\}", token)
    literal, choices = parts[0::2], [p.split(",") if "," in p else ["*"] for p in parts[1::2]]
    return [
        "".join(
            piece for pair in itertools.zip_longest(literal, combo, fillvalue="") for piece in pair
        )
        for combo in itertools.product(*choices)
    ]


def _path_exists(relative: str) -> bool:
    if "*" in relative:
        return any(ROOT.glob(relative.rstrip("/")))
    return (ROOT / relative).exists()


def missing_paths(text: str) -> list[str]:
    """Paths under a repository folder that name nothing in the repository."""
    missing = []
    for match in PATH.finditer(text):
        token = match.group(1).rstrip(".,")
        if "..." in token or token in GENERATED:
            continue  # `tests/...py::test_name` is a pattern, not a path
        missing += [path for path in _expand(token) if not _path_exists(path)]
    return missing


def _repository_file_names() -> set[str]:
    skip = {".venv", ".git", ".devstack", ".pytest_cache", "__pycache__", "artifacts"}
    names: set[str] = set()
    for _, folders, files in os.walk(ROOT):
        folders[:] = [folder for folder in folders if folder not in skip]
        names.update(files)
    return names


def missing_file_names(text: str, names: set[str]) -> list[str]:
    """Bare file names (`inbound.py`) that no file in the repository has, wherever it lives."""
    found = {m.group(1) for m in FILE_NAME.finditer(text)}
    found |= {m.group(1) for m in TOP_LEVEL_FILE.finditer(text)}
    return sorted(name for name in found if name not in names | OUTSIDE_FILE_NAMES)


def _defines(module: Path, name: str) -> bool:
    pattern = (
        rf"^(?:async\s+def|def|class)\s+{name}\b|^{name}\s*[:=]|^from\s.*\bimport\b.*\b{name}\b"
    )
    return bool(re.search(pattern, module.read_text(), re.MULTILINE))


def _module_exists(dotted: str) -> bool:
    names = dotted.replace(":", ".").split(".")
    folder = ROOT
    for index, name in enumerate(names):
        if (folder / name).is_dir():
            folder = folder / name
            continue
        module = folder / f"{name}.py"
        attributes = names[index + 1 :]
        if not module.exists():
            module, attributes = folder / "__init__.py", names[index:]
        return module.exists() and (not attributes or _defines(module, attributes[0]))
    return True


def missing_migrations(text: str) -> list[str]:
    """Migration names (`0004_provider_roles`) with no file in migrations/."""
    names = MIGRATION.findall(text)
    return [name for name in names if not (ROOT / "migrations" / f"{name}.py").is_file()]


def missing_modules(text: str) -> list[str]:
    """Dotted names (`service.shell.config.Config`, `service.wsgi:app`) that do not import."""
    return [m.group(1) for m in MODULE.finditer(text) if not _module_exists(m.group(1))]


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names |= set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)\(", path.read_text(), re.M))
    return names


def _defines_test(path: str, name: str) -> bool:
    file = ROOT / path
    pattern = rf"^\s*(?:async\s+)?def {name}\("
    return file.is_file() and bool(re.search(pattern, file.read_text(), re.MULTILINE))


def missing_tests(text: str, all_tests: set[str]) -> list[str]:
    """`tests/x.py::test_y` whose test is not in that file, and bare `test_y` found nowhere."""
    missing = [
        f"{path}::{name}"
        for path, name in TEST_REFERENCE.findall(text)
        if not _defines_test(path, name)
    ]
    missing += [name for name in TEST_NAME.findall(text) if name not in all_tests]
    return missing


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(_prose(page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(text: str, page: Path) -> list[str]:
    """Relative links in a page's text whose file, or heading, does not exist."""
    broken = []
    for target in LINK.findall(_prose(text)):
        if re.match(r"[a-z][a-z+.-]*:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or ROOT not in (linked, *linked.parents):
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    return broken


def _doc_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture(scope="module")
def file_names() -> set[str]:
    return _repository_file_names()


@pytest.fixture(scope="module")
def all_tests() -> set[str]:
    return _test_names()


@pytest.mark.parametrize("page", DOCS, ids=_doc_id)
def test_every_path_a_doc_names_exists(page: Path, file_names: set[str]):
    text = page.read_text()
    missing = [
        *missing_paths(text),
        *missing_file_names(text, file_names),
        *missing_modules(text),
        *missing_migrations(text),
    ]
    assert missing == []


@pytest.mark.parametrize("page", DOCS, ids=_doc_id)
def test_every_test_a_doc_names_exists(page: Path, all_tests: set[str]):
    assert missing_tests(page.read_text(), all_tests) == []


@pytest.mark.parametrize("page", DOCS, ids=_doc_id)
def test_every_relative_link_in_a_doc_resolves(page: Path):
    assert broken_links(page.read_text(), page) == []


def test_the_docs_are_the_readme_and_every_page_under_docs():
    names = {_doc_id(page) for page in DOCS}
    assert {"README.md", "docs/SECURITY.md", "docs/configuration.md"} <= names
    assert any(name.startswith("docs/decisions/") for name in names)


def test_the_security_write_up_cites_a_test_for_each_safeguard():
    references = set(TEST_REFERENCE.findall((ROOT / "docs" / "SECURITY.md").read_text()))
    assert len(references) > 30  # the HIPAA table and the threat model cite them


def test_the_checks_find_what_a_doc_could_get_wrong(all_tests: set[str]):
    text = (
        "See `service/conversation.py`, `service/shell/app.py`, `nowhere.py`, `inbound.py`, "
        "`service.config.Config`, `service.shell.config.Config`, `service.wsgi:app`, "
        "`service/conversation/flow/messages_{en,fr}.json`, "
        "`tests/unit/test_docs.py::test_nothing_like_this`, `test_nor_this`, "
        "migrations `0004_provider_roles` and `0005_nothing_yet`, "
        "`tests/unit/test_docs.py::test_every_relative_link_in_a_doc_resolves`."
    )
    assert missing_paths(text) == [
        "service/conversation.py",
        "service/conversation/flow/messages_fr.json",
    ]
    assert missing_file_names(text, _repository_file_names()) == ["nowhere.py"]
    assert missing_modules(text) == ["service.config.Config"]
    assert missing_migrations(text) == ["0005_nothing_yet"]
    assert missing_tests(text, all_tests) == [
        "tests/unit/test_docs.py::test_nothing_like_this",
        "test_nor_this",
    ]


def test_a_link_to_a_missing_page_or_heading_is_broken():
    text = (
        "[gone](nowhere.md), [no such heading](api.md#no-such-heading), [fine](api.md#endpoints), "
        "[secret rotation](SECURITY.md#4-rotating-every-secret), [up](../README.md), "
        "[outside](../../elsewhere.md), [web](https://example.com/x.md)"
    )
    assert broken_links(text, ROOT / "docs" / "page.md") == [
        "nowhere.md",
        "api.md#no-such-heading",
        "../../elsewhere.md",
    ]
    assert slug("Failed logins and failed download links (rate limiting)") == (
        "failed-logins-and-failed-download-links-rate-limiting"
    )
