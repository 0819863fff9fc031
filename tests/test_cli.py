"""The command line: exit codes, one clear line per problem, no traceback, nothing half-written; the demo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from injc.compiler.check import check
from tests.conftest import CANARIES, flip_bit, write_jsonl

REPO = Path(__file__).resolve().parents[1]


def injc(*args, env=None):
    return subprocess.run([sys.executable, "-m", "injc", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("injc: error: ")
    for fragment in fragments:
        assert fragment in result.stderr


def test_every_option_has_help_and_no_command_summary_is_cut():
    import click

    from injc.cli import main

    missing = [f"{name} {param.opts[0]}" for name, command in main.commands.items() for param in command.params
               if isinstance(param, click.Option) and not param.help]
    assert missing == []
    listing = injc("--help").stdout.split("Commands:")[1]
    assert "..." not in listing and len(listing.strip().splitlines()) >= len(main.commands)
    train = " ".join(injc("train", "--help").stdout.split())  # click folds lines; compare with single spaces
    for shown in ("[default: (0.0004)]", "[default: (4); x>=1]", "[default: (the plan's seed)]"):
        assert shown in train
    assert "Default:" not in train and "(default:" not in train


def test_help_lists_the_commands():
    result = injc("--help")
    assert result.returncode == 0
    for command in ("build", "inspect", "verify"):
        assert command in result.stdout
    assert "--clean" in injc("build", "--help").stdout


@pytest.mark.parametrize(
    "experiments, layout, fragments",
    [
        ("", "seq_len = 64\nbatch_size = 4\nsteps = 50\nbogus = 1", ["layout.bogus: unknown key"]),
        ('[[experiments]]\nname = "a"\nkind = "nope"\n', None, ['experiments[0] "a".kind: must be one of']),
        (CANARIES.replace("canaries.jsonl", "absent.jsonl"), None, ["absent.jsonl", "not found"]),
        ("", "seq_len = 64\nbatch_size = 4\nsteps = 1000000", ["corpus has", "the plan needs 256,000,000"]),
    ],
)
def test_bad_input_exits_2_with_clear_lines_and_no_output(project, tmp_path, experiments, layout, fragments):
    plan = project(experiments, **({"layout": layout} if layout else {}))
    out = tmp_path / "out"
    result = injc("build", plan, "--out", out, "--quiet")
    assert_user_error(result, *fragments)
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if ".injc-" in p.name]  # partial folder, lock, old output


def test_missing_plan_and_not_toml(tmp_path):
    assert_user_error(injc("build", tmp_path / "none.toml", "--out", tmp_path / "o"), "cannot be read")
    (tmp_path / "x.toml").write_text("this is = = not toml")
    assert_user_error(injc("build", tmp_path / "x.toml", "--out", tmp_path / "o"), "is not valid TOML")


def test_explicit_overlap_is_a_user_error(project, tmp_path):
    write_jsonl(project.root / "payloads" / "pinned.jsonl",
                [{"tokens": [1, 2, 3, 4], "offset": 10}, {"tokens": [5, 6], "offset": 12}])
    plan = project('[[experiments]]\nname = "p"\nkind = "tokens"\nfile = "payloads/pinned.jsonl"\n'
                   'placement = "explicit"\n')
    assert_user_error(injc("build", plan, "--out", tmp_path / "o", "--quiet"), "explicit insertions overlap")


def test_build_inspect_verify_round_trip(project, tmp_path):
    out = tmp_path / "out"
    built = injc("build", project(CANARIES), "--out", out, "--json", "--quiet")
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert summary["insertions"] == 60 and summary["total_tokens"] == 12_800 and summary["shards"] == 1

    report = json.loads(injc("inspect", out / "manifest.json", "--json").stdout)
    (experiment,) = report["experiments"]
    assert experiment["name"] == "canaries" and experiment["insertions"] == 60
    assert len(report["density"]["per_step"]) == 50
    assert sum(report["density"]["per_step"]) * 256 == pytest.approx(experiment["tokens"])

    text = injc("inspect", out / "manifest.json")
    assert text.returncode == 0 and "canaries" in text.stdout and "inserted share of each step" in text.stdout
    plotted = injc("inspect", out / "manifest.json", "--plot", tmp_path / "d.png")
    assert plotted.returncode == 0 and plotted.stdout == f"wrote {tmp_path / 'd.png'}\n"  # the plot, not the report
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    step = report["density"]["per_step"].index(max(report["density"]["per_step"]))
    listing = injc("inspect", out / "manifest.json", "--step", step).stdout.splitlines()
    assert listing[0].startswith(f"step {step}: ") and all(line.startswith("canaries") for line in listing[2:])
    assert len(listing) > 2
    assert_user_error(injc("inspect", out / "manifest.json", "--step", 50), "outside the run")

    verified = injc("verify", out / "manifest.json")
    assert verified.returncode == 0 and "verified" in verified.stdout
    shard = out / "shards" / "shard_00000.bin"
    flip_bit(shard, 100, 0xFF)
    broken = injc("verify", out / "manifest.json")
    assert broken.returncode == 1 and "injc: mismatch: shard shards/shard_00000.bin: sha256 differs" in broken.stderr
    assert_user_error(injc("verify", tmp_path / "nowhere.json"), "cannot be read")


def test_workers_do_not_change_a_single_byte(project, tmp_path):
    plan = project(CANARIES)
    for workers in (1, 2):
        assert injc("build", plan, "--out", tmp_path / f"w{workers}", "--workers", workers, "--quiet").returncode == 0
    for name in ("shards/shard_00000.bin", "insertions.parquet", "manifest.json"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


def test_the_embedded_demo_builds_and_verifies(tmp_path):
    out = tmp_path / "demo"
    built = injc("build", REPO / "examples/demo/plan.toml", "--out", out, "--quiet")
    assert built.returncode == 0, built.stderr
    assert "819,200 tokens in 4 shards" in built.stdout
    assert injc("verify", out).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["name"] for e in manifest["experiments"]] == ["canaries", "facts-late", "pinned"]


@pytest.mark.parametrize("plan", sorted(p.name for p in (REPO / "examples" / "demo").glob("*.toml")))
def test_every_shipped_plan_passes_injc_check(plan):
    """Each example's plan finds its files and corpus and fits (paper-small's run needs both corpus files)."""
    report = check(REPO / "examples" / "demo" / plan)
    assert report.plan.experiments
    assert any(line.endswith(": enough") for line in report.lines)
