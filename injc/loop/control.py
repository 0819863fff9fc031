"""`injc run PLAN --model M --out DIR`: the paper's dynamic control (§3, Algorithm 1) as a closed loop.

Window by window, for the plan's `per_window = "dynamic"` experiments:

    build the window (a staged build: the schedule is prefix-stable, so earlier steps never change)
      → train up to its end (resuming the run)
      → probe: the knowledge eval's P(target | input), mean over the experiment's probes
      → decide the next window's count (Algorithm 1, or the plan's controller)
      → ... → evaluate the final checkpoint.

Layout under DIR: build/ (the growing build; its manifest's `control` holds every decision), train/ (the run,
with a checkpoint step-NNNNNN/ at the end of every window, the one each decision probed),
control.jsonl (one record per experiment and window: window, first_step, probe, target, count, why),
control.png (probe against target, and the counts), eval/ (the final report). Decisions are read back from
control.jsonl, and the build and the run resume, so a run killed at any moment continues from the last finished
window with identical results when the same command is run again. With `train_cmd` each window is trained by the
user's command instead (injc.loop.external), from the previous window's checkpoint.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from injc.compiler.build import build
from injc.compiler.options import BuildOptions, parse_target
from injc.compiler.plan import load_plan
from injc.errors import InjcError, Interrupted
from injc.evals.context import EvalContext
from injc.evals.knowledge import probe_probabilities
from injc.evals.model import Scorer
from injc.evals.plots import control_plot
from injc.evals.report import evaluate
from injc.injectors.knowledge import decide
from injc.loop.external import check_command, run_window
from injc.shards.files import folder_lock, write_atomic
from injc.shards.manifest import MANIFEST_NAME, load_manifest
from injc.train.folders import latest_checkpoint
from injc.train.tracking import close_logger, experiment_logger
from injc.train.trainer import TrainConfig, train

RECORDS = "control.jsonl"


@dataclass(frozen=True)
class RunConfig:
    plan: Path
    out: Path
    model: str | None = None
    """A LitGPT config name or YAML file (a fresh model), or None with `init`."""
    init: Path | None = None
    """Start from this LitGPT checkpoint instead (continued pretraining)."""
    micro_batch_size: int = 4
    lr: float = 4e-4
    min_lr: float = 4e-5
    device: str | None = None
    seed: int | None = None
    evaluate: bool = True
    progress: bool = True
    logger: str | None = None
    """csv, tensorboard or wandb: each window's training (under train/logs/) and each decision's probe, target and
    count (under logs/, at the window's first step) are logged there too."""
    train_cmd: str | None = None
    """Train each window with this command instead of injc's trainer (see injc.loop.external); needs `init`."""
    target: str | None = None
    """"olmo-core:SEED": grow the build in OLMo-core's order (`build(target=...)`), the folder {data} names."""


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def _write_records(path: Path, records: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())


def decided_counts(records: list[dict], names: list[str]) -> dict[str, list[int]]:
    """Each experiment's counts, window by window, from the records (which must agree with the plan)."""
    counts = {name: [] for name in names}
    for record in records:
        if record["experiment"] not in counts or record["window"] != len(counts[record["experiment"]]):
            raise InjcError(f"{RECORDS} does not belong to this plan (record {record}); use another --out")
        counts[record["experiment"]].append(record["count"])
    if len({len(c) for c in counts.values()}) > 1:
        raise InjcError(f"{RECORDS} has decisions for some experiments' windows and not others'; use another --out")
    return counts


def _probe(manifest_path: Path, checkpoint: Path, names: list[str], device: str | None) -> dict[str, float]:
    manifest = load_manifest(manifest_path)
    ctx = EvalContext.open(manifest, Scorer(checkpoint, manifest.data["layout"]["eos_id"], device))
    entries = {e["name"]: e for e in manifest.experiments}
    return {name: float(probe_probabilities(ctx, ctx.records(entries[name])["probes"]).mean()) for name in names}


def run(config: RunConfig) -> dict:
    """Run the loop to the end of the plan (or continue it); returns {"records", "eval"}."""
    plan = load_plan(config.plan)
    dynamic = [e for e in plan.experiments if getattr(e, "control", None) is not None]
    if not dynamic:
        raise InjcError('the plan has no per_window = "dynamic" experiment: build and train it with injc build '
                        'and injc train')
    if len({e.window_steps for e in dynamic}) > 1:
        raise InjcError("the dynamic experiments must share window_steps: the loop stops at one set of windows")
    if config.target is not None:
        parse_target(config.target)
    if config.train_cmd is not None:
        check_command(config.train_cmd)
        if config.model is not None or config.init is None:
            raise InjcError("--train-cmd continues a checkpoint: give --init (the model your trainer starts from), "
                            "not --model")
    elif (config.model is None) == (config.init is None):
        raise InjcError("give --model (a fresh model) or --init (continue from a checkpoint)")
    with folder_lock(Path(config.out), "run loop"):
        try:
            return _loop(config, plan, dynamic)
        except Interrupted:  # the trainer's hint (--resume) is not how a loop continues
            raise Interrupted("run the same command again to continue from the last finished window") from None


def _loop(config: RunConfig, plan, dynamic: list) -> dict:
    out, steps, window = Path(config.out), plan.layout.steps, dynamic[0].window_steps
    names = [e.name for e in dynamic]
    out.mkdir(parents=True, exist_ok=True)
    records = read_records(out / RECORDS)
    counts = decided_counts(records, names)
    if not records:
        records = [{"experiment": e.name, "window": 0, "first_step": 0, "probe": None, "target": 0.0,
                    "count": e.control.initial, "why": "initial count"} for e in dynamic]
        _write_records(out / RECORDS, records)
        counts = decided_counts(records, names)
    windows = math.ceil(steps / window)
    first = len(counts[names[0]]) - 1
    checkpoint = config.init if first == 0 or config.train_cmd is None else out / "train" / f"window-{first - 1:04d}"
    tracker = experiment_logger(config.logger, out, first * window) if config.logger else None
    for current in range(first, windows):
        end = min((current + 1) * window, steps)
        manifest = out / "build" / MANIFEST_NAME
        written = load_manifest(manifest).until_step if manifest.is_file() else 0
        if written < end:
            build(config.plan, out / "build", BuildOptions(
                until_step=end if end < steps else None, counts=counts, control=records, progress=config.progress,
                force=written == 0 and (out / "build").exists(), target=config.target))
        checkpoint = _train_window(config, manifest, current, window, end, checkpoint)
        if current + 1 == windows:
            break
        probes = _probe(manifest, checkpoint, names, config.device)
        for experiment in dynamic:
            target = experiment.control.target_at(end, steps)
            state = {"window": current + 1, "first_step": end, "total_steps": steps, "target": target,
                     "previous": counts[experiment.name][-1],
                     "history": [r for r in records if r["experiment"] == experiment.name]}
            count, why = decide(experiment.control, state, probes[experiment.name])
            records.append({"experiment": experiment.name, "window": current + 1, "first_step": end,
                            "probe": probes[experiment.name], "target": target, "count": count, "why": why})
            counts[experiment.name].append(count)
            if tracker is not None:
                tracker.log_metrics({f"{experiment.name}/probe": probes[experiment.name],
                                     f"{experiment.name}/target": target, f"{experiment.name}/count": count}, step=end)
        _write_records(out / RECORDS, records)
    final = checkpoint if config.train_cmd is not None else out / "train" / "final"
    final_probes = _probe(manifest, final, names, config.device)
    if tracker is not None:
        tracker.log_metrics({f"{name}/probe": value for name, value in final_probes.items()}, step=steps)
        close_logger(tracker)
    summary = {"records": records, "final_probe": final_probes,
               "final_target": {e.name: e.control.target for e in dynamic}}
    control_plot(summary, steps, out / "control.png")
    if config.evaluate:
        summary["eval"] = "eval"  # the report's folder, relative to control.json's
        evaluate(manifest, [final], out / "eval", progress=config.progress, force=True)
    (out / "control.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _train_window(config: RunConfig, manifest: Path, current: int, window: int, end: int, previous):
    """Train up to `end`: with injc's trainer (resuming its run), or with the user's command from the previous
    window's checkpoint."""
    out = Path(config.out)
    if config.train_cmd is not None:
        return run_window(config.train_cmd, out / "train", current, manifest, current * window, end,
                          Path(previous) if previous is not None else None, progress=config.progress)
    started = latest_checkpoint(out / "train") is not None
    return train(manifest, TrainConfig(
        model=config.model, out=out / "train", init=config.init, steps=end, save_steps=(end,),
        resume=started, force=not started and (out / "train").exists(), micro_batch_size=config.micro_batch_size,
        lr=config.lr, min_lr=config.min_lr, device=config.device, seed=config.seed, logger=config.logger),
        progress=config.progress)


def probe_table(summary: dict) -> str:
    """The decisions as a Markdown table (for results files)."""
    lines = ["| experiment | window | first step | probe | target | count | why |", "|---|---|---|---|---|---|---|"]
    for r in summary["records"]:
        probe = "—" if r["probe"] is None else f"{r['probe']:.4f}"
        lines.append(f"| {r['experiment']} | {r['window']} | {r['first_step']} | {probe} | {r['target']:.4f} | "
                     f"{r['count']} | {r['why']} |")
    return "\n".join(lines) + "\n"

