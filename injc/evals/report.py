"""`injc eval MANIFEST --checkpoint DIR [DIR ...] --out REPORT`: every experiment's effect on checkpoints.

Writes report.json (one checkpoint: {"checkpoint", "steps_done", "heldout", "warnings", "experiments": {NAME: {"kind",
"metrics", "items"}}}; several: {"checkpoints": [that, ...]}), report.md (tables a person reads) and PNG plots.
Every experiment gets metrics.mean_loss (see injc.evals.generic); families add the paper's measurements.
"""

import glob
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from injc.errors import InjcError, some_of
from injc.evals import canaries, contamination, forgetting, generic, knowledge, math, poisoning, verbatim, watermark
from injc.evals.benchmarks import check_tasks, run_benchmarks
from injc.evals.context import EvalContext
from injc.evals.heldout import heldout_loss
from injc.evals.markdown import headline, render
from injc.evals.model import BATCH, Scorer
from injc.evals.plots import write_plots
from injc.shards.files import written_whole
from injc.shards.manifest import identity_differences, load_manifest
from injc.shards.stream import TokenStream
from injc.train.hf import fit_problems
from injc.train.tracking import close_logger, experiment_logger

FAMILIES = {
    "canaries": canaries.evaluate,
    "contamination": contamination.evaluate,
    "knowledge": knowledge.evaluate,
    "poisoning": poisoning.evaluate,
    "math": math.evaluate,
    "forgetting": forgetting.evaluate,
    "gaussian-watermark": watermark.evaluate,
    "verbatim-removal": verbatim.evaluate,
    "iid": generic.iid,
    "documents": generic.documents,
}
def resolve_checkpoints(given: list[str | Path]) -> list[Path]:
    """Checkpoint folders from paths and globs (a quoted `runs/r/step-*` is expanded here, sorted); a glob that
    matches no folder is an error, and each folder is named once."""
    folders: list[Path] = []
    for entry in map(str, given):
        if glob.has_magic(entry) and not Path(entry).exists():
            matches = sorted(Path(m) for m in glob.glob(entry) if Path(m).is_dir())
            if not matches:
                raise InjcError(f"--checkpoint {entry!r} matches no folder")
            folders += matches
        else:
            folders.append(Path(entry))
    return list(dict.fromkeys(folders))


def manifest_warnings(train_state: dict | None, manifest, checkpoint: str | Path) -> list[str]:
    """A checkpoint trained on another build than the one evaluated measures the wrong insertions: say so."""
    if train_state is None:
        return [f"{str(checkpoint)!r} has no train_state.json: cannot tell which build it was trained on"]
    differences = identity_differences(train_state, manifest)
    if differences:
        return [f"{str(checkpoint)!r} was trained on another manifest than the one evaluated "
                f"({'; '.join(differences)}): its insertions are not the ones measured here"]
    return []


def evaluate_checkpoint(manifest_path: str | Path, checkpoint: "str | Path | Scorer", progress: bool = True,
                        judge: str | Path | None = None, baseline: str | Path | None = None,
                        batch_size: int = BATCH, benchmarks: list[str] | None = None,
                        tasks_dir: str | Path | None = None, precision: str | None = None) -> dict:
    """One checkpoint's report; `judge` (a checkpoint) judges generations where a family needs it (poisoning);
    `baseline` (a checkpoint that never saw the inserted data, the clean run) is the paired control where a family
    uses one (forgetting). Each checkpoint is a LitGPT or Hugging Face folder; `batch_size` sequences share a
    forward pass, in `precision` (bf16-mixed or 32-true; by default bf16 autocast on CUDA, float32 elsewhere); a
    Scorer already loaded (a notebook's, a benchmark's) is used as it is. `benchmarks` (lm-eval task
    names, with `tasks_dir` for one's own) adds lm-evaluation-harness's results (`injc.evals.benchmarks`)."""
    manifest = load_manifest(manifest_path)
    TokenStream(manifest)  # refuses shards whose sizes differ from the manifest
    eos = manifest.data["layout"]["eos_id"]
    scorer, judge_scorer, baseline_scorer = (
        folder if folder is None or isinstance(folder, Scorer)
        else Scorer(folder, eos, batch_size=batch_size, precision=precision)
        for folder in (checkpoint, judge, baseline))
    checkpoint = scorer.checkpoint
    ctx = EvalContext.open(manifest, scorer, judge_scorer, baseline_scorer)
    ctx.score_items()
    experiments = {}
    for entry in tqdm(manifest.experiments, desc=f"eval {Path(checkpoint).name}", disable=not progress,
                      file=sys.stderr):
        records = ctx.records(entry)
        family = FAMILIES.get(entry["kind"])
        result = family(ctx, entry, records) if family and records is not None else generic.mean_loss(ctx, entry)
        if "mean_loss" not in result["metrics"]:
            result["metrics"]["mean_loss"] = generic.mean_loss(ctx, entry)["metrics"]["mean_loss"]
        experiments[entry["name"]] = {"kind": entry["kind"], **result}
    report = {"checkpoint": str(checkpoint), "steps_done": ctx.scorer.steps_done, "precision": scorer.precision,
              "heldout": heldout_loss(ctx),
              "warnings": manifest_warnings(scorer.train_state, manifest, checkpoint), "experiments": experiments}
    if benchmarks:
        report["benchmarks"] = run_benchmarks(checkpoint, benchmarks, manifest_path, tasks_dir, batch_size)
    return report


def json_safe(value):
    """The value with NaN and infinities as None: report.json is strict JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def check_checkpoints(manifest_path: str | Path, checkpoints: list[Path], others: dict[str, Path | None]) -> list[str]:
    """Before any evaluation: every checkpoint (and judge, baseline) is a LitGPT or Hugging Face folder whose
    embedding has a row for every id of the build and whose context holds a row (seq_len − 1 tokens), else one
    error line each; returns the warnings of checkpoints trained on another build, so they are said at once rather
    than after the evaluation."""
    manifest = load_manifest(manifest_path)
    vocab, seq_len = manifest.data["layout"]["vocab_size"], manifest.layout.seq_len
    problems, warnings = [], []
    named = [("--checkpoint", c) for c in checkpoints] + [(f"--{k}", v) for k, v in others.items() if v is not None]
    for option, folder in named:
        folder = Path(folder)
        found = fit_problems(folder, vocab, seq_len, option)
        problems += found
        if found:
            continue
        if option == "--checkpoint":
            state = folder / "train_state.json"
            warnings += manifest_warnings(json.loads(state.read_text()) if state.is_file() else None, manifest, folder)
    if problems:
        raise InjcError(*problems)
    return warnings


def _mean_loss_text(value: float | None) -> str:
    return "mean loss —" if value is None else f"mean loss {value:.4f}"


def scalar_metrics(report: dict) -> dict[str, float]:
    """Every finite number of one checkpoint's metrics, keyed `EXPERIMENT/metric/...` (and `heldout/loss`): what
    `--logger` sends, so curves over checkpoints appear beside the training loss."""
    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key}", inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            flat[prefix] = float(value)

    for name, experiment in report["experiments"].items():
        walk(name, experiment["metrics"])
    if report.get("heldout"):
        flat["heldout/loss"] = float(report["heldout"]["loss"])
    for task, result in report.get("benchmarks", {}).get("tasks", {}).items():
        walk(f"benchmarks/{task}", result["metrics"])
    return flat


def summary_lines(report: dict) -> list[str]:
    """One line per experiment with its headline result (the last checkpoint's), for the terminal."""
    last = report["checkpoints"][-1] if "checkpoints" in report else report
    lines = [f"{name} ({e['kind']}): {headline(e) or _mean_loss_text(e['metrics'].get('mean_loss'))}"
             for name, e in last["experiments"].items()]
    if last.get("heldout"):
        lines.append(f"held-out loss {last['heldout']['loss']:.4f} ({last['heldout']['rows']} never-trained rows)")
    for task, result in last.get("benchmarks", {}).get("tasks", {}).items():
        metrics = result["metrics"]
        lines.append(f"{task} (lm-eval): " + ", ".join(f"{m} {metrics[m]:.4f} ± {metrics.get(m + '_stderr', 0):.4f}"
                                                         for m in ("acc", "acc_norm") if m in metrics))
    return lines


REPORT_FILES = ("report.json", "report.md", "logs")
"""What injc eval writes into a report folder, besides its plots (the first: the file that marks a report)."""


def check_report_folder(out: Path, force: bool, names: tuple[str, ...] = REPORT_FILES,
                        command: str = "injc eval") -> None:
    """Before any work: a report goes into an empty or absent folder; `force` replaces an earlier report whole
    (a folder holding only what `command` writes: `names` and PNG plots), so no plot of an earlier report is left
    beside a new one."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InjcError(f"--out {str(out)!r} is a file, not a folder")
    entries = sorted(out.iterdir())
    if not entries:
        return
    if not force:
        raise InjcError(f"report folder {str(out)!r} is not empty; add --force to replace the earlier report, or "
                        f"pick another --out")
    strays = [e.name for e in entries if not (e.name in names or (e.suffix == ".png" and e.is_file()))]
    if strays or not (out / names[0]).is_file():
        raise InjcError(f"--force replaces only an earlier {command} report; {str(out)!r} "
                        + (f"also holds {some_of(strays)}" if strays else f"has no {names[0]}")
                        + ": move it away yourself or pick another --out")


def evaluate(manifest_path: str | Path, checkpoints: list[str | Path], out: str | Path,
             progress: bool = True, judge: str | Path | None = None, baseline: str | Path | None = None,
             on_warning=None, batch_size: int = BATCH, logger: str | None = None, force: bool = False,
             benchmarks: list[str] | None = None, tasks_dir: str | Path | None = None,
             precision: str | None = None) -> dict:
    """Evaluate each checkpoint (folders or globs; sorted by training steps) and write report.json, report.md and
    plots to `out` (with `logger`, every checkpoint's metrics also to that logger under out/logs/). `out` must be
    empty or absent; `force` replaces an earlier report there, whole. The report is written beside `out` and
    moved into place when complete. Each report's `warnings` says when a checkpoint was trained on another
    manifest; `on_warning` (a callable) hears each one before the evaluation starts. `benchmarks`: lm-eval tasks run
    on each checkpoint (checked before anything is scored)."""
    out = Path(out)
    check_report_folder(out, force)
    if benchmarks:
        check_tasks(benchmarks, tasks_dir)
    checkpoints = resolve_checkpoints(checkpoints)
    if not checkpoints:
        raise InjcError("give at least one --checkpoint")
    for warning in check_checkpoints(manifest_path, checkpoints, {"judge": judge, "baseline": baseline}):
        if on_warning is not None:
            on_warning(warning)
    reports = [evaluate_checkpoint(manifest_path, c, progress, judge, baseline, batch_size, benchmarks, tasks_dir,
                                   precision) for c in checkpoints]
    reports.sort(key=lambda r: (r["steps_done"] is None, r["steps_done"] or 0))
    report = json_safe(reports[0] if len(reports) == 1 else {"checkpoints": reports})
    with written_whole(out) as partial:
        (partial / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        plots = write_plots(reports, partial)
        (partial / "report.md").write_text(render(reports, plots))
        if logger is not None:  # each checkpoint's metrics at its training step (its position when it has none)
            tracker = experiment_logger(logger, partial)
            for position, checkpoint_report in enumerate(reports):
                step = checkpoint_report["steps_done"] if checkpoint_report["steps_done"] is not None else position
                tracker.log_metrics(scalar_metrics(checkpoint_report), step=step)
            close_logger(tracker)
    return report
