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
    from mkdocs_hooks import README

    nav = (REPO / "mkdocs.yml").read_text()
    assert sorted(re.findall(r": ([\w-]+\.md)$", nav, re.M)) == sorted(
        [README, *(p.name for p in (REPO / "docs").glob("*.md"))])


def test_the_built_site_serves_every_image_and_link_its_pages_name(tmp_path):
    """The site as `mkdocs build --strict` makes it (the README and the examples' results published by
    mkdocs_hooks.py): every relative src and href of every page is a file of the site."""
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    missing, images = [], 0
    for page in site.rglob("*.html"):
        for kind, target in re.findall(r'(src|href)="([^"#?]+)', page.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "data:", "/")):  # "/": 404.html, server-rooted
                continue
            path = (page.parent / target).resolve()
            images += kind == "src" and target.endswith(".png")
            if not (path.is_file() or (path / "index.html").is_file()):
                missing.append(f"{page.relative_to(site)}: {target}")
    assert missing == [] and images >= 5  # the README's density plot and the four plots of experiments.md
    assert "Quick start" in (site / "getting-started" / "index.html").read_text()


COMMON = {"name", "kind", "cpdt_outcome", "placement", "start_step", "end_step", "fields", "dataset_split"}
"""Keys every kind takes, documented once above the kinds table of docs/plan.md."""


def documented_keys() -> dict[str, dict[str, str | None]]:
    """docs/plan.md's kinds table: kind → {key: its documented default as written, or None}."""
    import tomllib

    table = (REPO / "docs" / "plan.md").read_text().split("| kind | keys (defaults) |")[1].split("\n\n")[0]
    kinds = {}
    for row in table.splitlines()[2:]:
        kind, keys = re.match(r"\| `([\w-]+)` \| (.*?) \| [^|]*\|$", row).groups()
        entries = {}
        for code in re.findall(r"`([^`]+)`", keys.replace("\\|", "|")):
            key, _, default = code.partition(" = ")
            if re.fullmatch(r"[a-z_]+", key):
                try:
                    entries.setdefault(key, repr(tomllib.loads(f"x = {default}")["x"]) if default else None)
                except tomllib.TOMLDecodeError:
                    entries.setdefault(key, None)
        kinds[kind] = entries
    return kinds


def test_the_plan_reference_names_every_key_each_kind_reads_with_its_default(monkeypatch):
    """Every shipped plan loaded with a TableReader that records each key read and its default: each key of each
    kind is in its row of docs/plan.md, and a default written there (`key = value`) is the code's."""
    import injc
    from injc.tables import REQUIRED, TableReader

    read: dict[str, dict] = {}
    get, int_list = TableReader.get, TableReader.int_list

    def recording_get(self, key, default):
        read.setdefault(self.where, {}).setdefault(key, default)
        return get(self, key, default)

    def recording_int_list(self, key, default, minimum):
        read.setdefault(self.where, {})[key] = default
        return int_list(self, key, default, minimum)

    monkeypatch.setattr(TableReader, "get", recording_get)
    monkeypatch.setattr(TableReader, "int_list", recording_int_list)
    kinds_read: dict[str, dict] = {}
    for plan in sorted((REPO / "examples" / "demo").glob("*.toml")):
        read.clear()
        for experiment in injc.load_plan(plan).experiments:
            for where, keys in read.items():  # 'experiments[2] "facts"' and its subtables ('….control')
                if f'"{experiment.name}"' in where:
                    kinds_read.setdefault(experiment.kind, {}).update(keys)
    documented = documented_keys()
    assert set(kinds_read) == set(documented)  # the shipped plans use every kind
    for kind, keys in kinds_read.items():
        undocumented = sorted(set(keys) - COMMON - set(documented[kind]))
        assert undocumented == [], kind
        for key, default in keys.items():
            written = documented[kind].get(key)
            if written is not None and default is not REQUIRED:
                assert written == repr(default), (kind, key)
