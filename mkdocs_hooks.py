"""MkDocs hook: the repository's README (as getting-started) and the examples' committed results (each results.md
or impact.md and their plots) are published with the site, so pages link to them as the repository does (`../README.md`,
`../examples/...`), on GitHub and on the site alike."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent
PUBLISHED = ("examples/*/results.md", "examples/*/results/*.png", "examples/*/impact.md", "examples/*/impact/*/*.png",
             "examples/*/impact/*/compare.md")
README = "getting-started.md"
"""The README's page on the site."""


def on_files(files, config):
    for pattern in PUBLISHED:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"],
                              config["use_directory_urls"]))
    files.append(File.generated(config, README, abs_src_path=str(ROOT / "README.md")))
    return files


def on_page_markdown(markdown, page, config, files):
    """A docs page links to ../examples/X and ../README.md; on the site they sit beside it. The README links to
    docs/X, which on the site is X."""
    if page.file.src_uri == README:
        return markdown.replace("](docs/", "](")
    up = "../" * page.file.src_uri.count("/")
    return markdown.replace("](../" + up + "examples/", "](" + up + "examples/").replace(
        "](../" + up + "README.md", "](" + up + README)
