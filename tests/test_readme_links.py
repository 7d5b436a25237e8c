"""README.md and docs/*.md: every relative link and anchor resolves, the README stays a front page.

Every Markdown link and image (``[text](target)``, ``![alt](target)``) outside fenced code blocks
and code spans that is not a URL (``http:``, ``https:``, ``mailto:``, ...) must name a file or
folder of the repository, and its ``#anchor``, in the same file or another ``.md``, a heading of
that file, computed as GitHub does. The README has at most 300 lines and links every docs page.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 300

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# A code span: a run of backticks, then anything up to the same run, within one paragraph.
CODE_SPAN = re.compile(r"(`+)(?:(?!\n[ \t]*\n)[\s\S])*?(?<!`)\1(?!`)")
# [text](target) or ![alt](target), the target optionally in <...> and followed by a "title".
LINK = re.compile(
    r"!?\[(?P<text>(?:(?!\n[ \t]*\n)[^\]])*)\]"
    r"\(\s*(?:<(?P<angled>[^>]*)>|(?P<target>[^)\s]*))(?:\s+\"[^\"]*\")?\s*\)"
)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def prose(text: str) -> str:
    """The text with fenced code blocks blanked (lines kept, so line numbers stay right)."""
    lines, fence = [], ""
    for line in text.split("\n"):
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            lines.append("")
        elif match:
            fence = match.group(1)
            lines.append("")
        else:
            lines.append(line)
    return "\n".join(lines)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase; characters other than letters, digits, spaces,
    hyphens and underscores removed (backticks and punctuation included); spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, repeated ones suffixed -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(text).split("\n"):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    body = CODE_SPAN.sub(lambda m: "code" + "\n" * m.group(0).count("\n"), prose(text))
    return [
        (body.count("\n", 0, m.start()) + 1, m.group("angled") or m.group("target") or "")
        for m in LINK.finditer(body)
    ]


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """What is wrong with each relative link of `page` (its `text` when given), as
    'file:line: target: why'."""
    if text is None:
        text = page.read_text(encoding="utf-8")
    problems = []
    where = page.relative_to(ROOT)
    for line, target in links(text):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path)
        destination = (page.parent / path).resolve() if path else page
        if not target:
            problems.append(f"{where}:{line}: an empty link")
        elif not destination.is_relative_to(ROOT):
            problems.append(f"{where}:{line}: {target}: outside the repository")
        elif destination != page and not destination.exists():
            problems.append(f"{where}:{line}: {target}: no such file")
        elif anchor:
            if destination.suffix != ".md" or destination.is_dir():
                problems.append(f"{where}:{line}: {target}: an anchor into a file that is not .md")
                continue
            heading_text = text if destination == page else destination.read_text(encoding="utf-8")
            if unquote(anchor) not in anchors(heading_text):
                problems.append(f"{where}:{line}: {target}: no heading has this anchor")
    return problems


def test_there_are_docs_pages() -> None:
    assert DOCS, "docs/*.md holds the reference"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_is_a_front_page_of_at_most_300_lines() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference to docs/"


def test_the_readme_links_every_docs_page() -> None:
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(README.read_text(encoding="utf-8"))
        if not SCHEME.match(target)
    }
    assert [str(page.relative_to(ROOT)) for page in DOCS if page not in linked] == []


def test_every_docs_page_has_a_title_and_links_back_to_the_readme() -> None:
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        assert text.startswith("# "), f"{page.name} starts with its title"
        targets = {target.partition("#")[0] for _, target in links(text)}
        assert "../README.md" in targets, f"{page.name} links back to the README"


# --- the checker itself -----------------------------------------------------------------------


def test_anchors_are_computed_as_github_does() -> None:
    text = "\n".join(
        [
            "# dlops — any ONNX image classifier",
            "## `POST /predict`",
            "### The parity check: `--expect`",
            "## Loading, reloading and unloading: the repository extension",
            "## API",
            "## API",
            "```sh",
            "# a shell comment, not a heading",
            "```",
            "## API",
        ]
    )
    assert anchors(text) == {
        "dlops--any-onnx-image-classifier",
        "post-predict",
        "the-parity-check---expect",
        "loading-reloading-and-unloading-the-repository-extension",
        "api",
        "api-1",
        "api-2",
    }


def test_the_checker_finds_broken_links_and_anchors() -> None:
    page = ROOT / "docs" / "link-check-probe.md"  # never written: checked as if it were there
    text = "\n".join(
        [
            "# Probe",
            "[fine](../README.md) [also fine](#probe) [a URL](https://example.com/#nope)",
            "[no file](missing.md) [no anchor](../README.md#no-such-heading)",
            "[no anchor here](#nowhere), ![no image](nope.png) ![an image](ui.png)",
            "`[inside a code span](missing-too.md)`",
            "```md",
            "[inside a fence](missing-three.md)",
            "```",
            "[a link over",
            "two lines](#nowhere-either)",
        ]
    )
    assert links(text) == [
        (2, "../README.md"),
        (2, "#probe"),
        (2, "https://example.com/#nope"),
        (3, "missing.md"),
        (3, "../README.md#no-such-heading"),
        (4, "#nowhere"),
        (4, "nope.png"),
        (4, "ui.png"),
        (9, "#nowhere-either"),
    ]
    assert broken_links(page, text) == [
        "docs/link-check-probe.md:3: missing.md: no such file",
        "docs/link-check-probe.md:3: ../README.md#no-such-heading: no heading has this anchor",
        "docs/link-check-probe.md:4: #nowhere: no heading has this anchor",
        "docs/link-check-probe.md:4: nope.png: no such file",
        "docs/link-check-probe.md:9: #nowhere-either: no heading has this anchor",
    ]
