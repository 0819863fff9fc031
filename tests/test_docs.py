"""The README and docs/ pages: every relative link points at a file of the repository (the docs site's own build,
`mkdocs build --strict` in CI, cannot check the links into examples/)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s#]+)(#[^)]*)?\)")


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = [(page.name, match.group(1)) for page in pages for match in LINK.finditer(page.read_text())
              if not match.group(1).startswith(("http://", "https://")) and not (page.parent / match.group(1)).exists()]
    assert len(pages) > 10 and broken == []


def test_the_docs_site_lists_every_page():
    nav = (REPO / "mkdocs.yml").read_text()
    assert sorted(re.findall(r": (\w+\.md)$", nav, re.M)) == sorted(p.name for p in (REPO / "docs").glob("*.md"))
