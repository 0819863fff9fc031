"""`injc train --logger`: what each logger wrote, read back with its own reader, equals metrics.jsonl."""

import csv
import json

import pytest

from tests.train.conftest import run

pytest.importorskip("torch")
pytest.importorskip("litgpt")


def logged(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_csv_logs_every_step_and_a_resumed_part_in_a_file_of_its_own(built, tmp_path):
    out = tmp_path / "run"
    run(built, out, steps=3, logger="csv")
    run(built, out, steps=5, resume=True, logger="csv")
    rows = []
    for part in ("from-step-000000", "from-step-000003"):
        with open(out / "logs" / "csv" / part / "metrics.csv") as handle:
            rows += [r for r in csv.DictReader(handle) if r.get("loss")]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == pytest.approx([m["loss"] for m in logged(out)])
    assert [float(r["lr"]) for r in rows] == pytest.approx([m["lr"] for m in logged(out)])


def test_tensorboard_event_files_hold_the_loss_and_lr_of_every_step(built, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run(built, out, steps=4, logger="tensorboard")
    events = EventAccumulator(str(out / "logs" / "tensorboard" / "version_0"))
    events.Reload()
    for tag in ("loss", "lr", "tokens_per_sec"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [0, 1, 2, 3]
        if tag != "tokens_per_sec":
            assert [s.value for s in scalars] == pytest.approx([m[tag] for m in logged(out)], rel=1e-6)


def test_wandb_runs_offline_with_every_step_sent(built, tmp_path, monkeypatch):
    """A real W&B run in offline mode (its run file is written); what injc sent it, seen through the logger's own
    log_metrics, is metrics.jsonl step by step. (wandb 0.31 keeps its run file in a binary log that only its own
    service reads, so the values are checked where they enter it.)"""
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sent, original = [], WandbLogger.log_metrics

    def spy(self, metrics, step=None):
        sent.append((step, dict(metrics)))
        return original(self, metrics, step)

    monkeypatch.setattr(WandbLogger, "log_metrics", spy)
    out = tmp_path / "run"
    run(built, out, steps=3, logger="wandb")
    assert [step for step, _ in sent] == [0, 1, 2]
    assert [m["loss"] for _, m in sent] == pytest.approx([m["loss"] for m in logged(out)])
    (run_file,) = (out / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    assert run_file.stat().st_size > 0
