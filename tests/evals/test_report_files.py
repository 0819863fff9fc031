"""What `injc eval` leaves on disk and what report.md says: a used folder is refused or replaced whole, and the
tables read as the numbers in report.json."""

import json
import shutil

import numpy as np
import pytest

from tests.test_cli import assert_user_error
from tests.test_cli import injc as run_injc

pytest.importorskip("torch")
pytest.importorskip("litgpt")

from injc.evals.report import evaluate  # noqa: E402


def test_a_used_report_folder_is_refused_or_replaced_whole_with_force(trained, tmp_path):
    root, _ = trained
    manifest, checkpoint = root / "out" / "manifest.json", root / "run" / "final"
    shutil.copytree(root / "report", tmp_path / "report")
    (tmp_path / "report" / "from_an_earlier_plan.png").write_bytes(b"an earlier report's plot")
    before = sorted(p.name for p in (tmp_path / "report").iterdir())
    result = run_injc("eval", manifest, "--checkpoint", checkpoint, "--out", tmp_path / "report", "--quiet")
    assert_user_error(result, "is not empty", "--force")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == before
    result = run_injc("eval", manifest, "--checkpoint", checkpoint, "--out", tmp_path / "report", "--quiet",
                      "--force")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "report" / "from_an_earlier_plan.png").exists()
    assert json.loads((tmp_path / "report" / "report.json").read_text())["steps_done"] == 60
    assert not list(tmp_path.glob(".report.injc-partial"))
    (tmp_path / "report" / "my-notes.txt").write_text("mine")
    with pytest.raises(Exception, match="also holds my-notes.txt"):
        evaluate(manifest, [checkpoint], tmp_path / "report", progress=False, force=True)
    assert (tmp_path / "report" / "my-notes.txt").read_text() == "mine"


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the table under `heading`, split at unescaped pipes (as a Markdown renderer splits them)."""
    import re

    lines = markdown.split(heading, 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_report_md_tables_keep_their_columns_and_show_the_intervals_of_report_json(trained):
    root, report = trained
    markdown = (root / "report" / "report.md").read_text()
    knowledge = table_rows(markdown, "### facts: probes")
    assert knowledge[0] == ["input", "target", "P(target \\| input)", "in the greedy continuation"]
    assert all(len(row) == 4 for row in knowledge) and len(knowledge) > 2
    secrets = report["experiments"]["secrets"]["metrics"]["vs_controls"]
    low, high = secrets["difference_ci95"]
    assert f"[{low:.3f}, {high:.3f}]" in markdown.split("### secrets: against controls", 1)[1].split("###")[0]
    assert f"[{low:.3f}, {high:.3f}]" in [line for line in markdown.splitlines() if line.startswith("| secrets |")][0]
    watermark = report["experiments"]["gw"]["metrics"]
    low, high = watermark["mean_x_ci95"]
    assert f"{watermark['mean_x']:.3f} [{low:.3f}, {high:.3f}]" in markdown


def test_the_watermark_intervals_are_the_bootstrap_of_its_x_values(trained):
    """Recomputed here: 2,000 resamples of the members' x with numpy's default_rng(0), percentile interval."""
    _, report = trained
    gw = report["experiments"]["gw"]
    x = np.array(gw["x"])
    rng = np.random.default_rng(0)
    means, rates = [], []
    for _ in range(2000):
        sample = x[rng.integers(0, len(x), len(x))]
        means.append(sample.mean())
        rates.append((sample < -2.3263478740408408).mean())
    assert gw["metrics"]["mean_x_ci95"] == pytest.approx([np.percentile(means, 2.5), np.percentile(means, 97.5)])
    assert gw["metrics"]["tpr_ci95"] == pytest.approx([np.percentile(rates, 2.5), np.percentile(rates, 97.5)])

