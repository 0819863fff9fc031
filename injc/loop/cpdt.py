"""`injc cpdt PLAN --checkpoint C --out DIR`: continual pretraining dependence testing (Bordt & Pawelczyk §4).

Do the experiments of one run interfere? Starting from checkpoint C, train one short run per row and measure
every experiment's outcome Y_i after each:

- rows: `none` (no insertions: a real run on the plain base stream, not the untrained checkpoint, so the
  comparison isolates the inserted data from the effect of training itself), one row per experiment j (only
  j's data written), and `all`;
- every row is a build of the same plan with `injc build --only` (the same base stream and, since every
  payload is made whatever is written, the same items), trained `--steps` steps from C (`injc train --init`),
  and evaluated against the `all` build's manifest, which holds every experiment's items and eval records;
- the matrix is Y_i^{j} − Y_i^{none}: it should be diagonal when experiments do not interfere.

Outcomes follow the paper's Table 8 (`OUTCOMES`); a plan key `cpdt_outcome` (a dotted path into the eval
result) replaces an experiment's. Each seed s gives one matrix: its rows share the plan seed + s (placements,
items) and the corpus window s runs further in (`window`), so that every row, `none` included, differs between
seeds; the p-values and CIs test over seeds (see `analyse` for why the training run is the unit, and for the
item-level test reported beside it). The corpus must hold `seeds` runs (and any holdout_tokens).

Layout under DIR: design.json (what was asked; a rerun with other settings is refused), seed-S/ROW/build,
seed-S/ROW/run, seed-S/ROW/eval.json (a finished row: a killed run continues with the others), cpdt.json,
cpdt.md, cpdt.png.
"""

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from injc.compiler.build import build
from injc.compiler.check import estimate_corpus_tokens
from injc.compiler.options import BuildOptions, parse_target
from injc.compiler.plan import Plan, load_plan
from injc.errors import InjcError, Interrupted
from injc.evals.markdown import p_text, signed
from injc.evals.plots import cpdt_heatmap
from injc.evals.poisoning import LEAK_RECALL
from injc.evals.report import evaluate_checkpoint, json_safe
from injc.evals.stats import bootstrap_ci, sign_flip_pvalue
from injc.loop.external import check_command, run_window
from injc.shards.files import write_atomic
from injc.shards.manifest import MANIFEST_NAME
from injc.tokenizer import load_tokenizer
from injc.train.checkpoints import checkpoint_config
from injc.train.hf import fit_problems
from injc.train.tracking import close_logger, experiment_logger
from injc.train.trainer import TrainConfig, train

LOSS_KINDS = ("texts", "tokens", "canaries", "documents", "iid", "forgetting")


def _inserted_losses(result: dict) -> np.ndarray:
    """Loss of each inserted item (canaries: members; others: items with copies)."""
    return np.array([i["loss"] for i in result["items"] if i.get("copies", 1) > 0 and i.get("member", True)])


def _smallest_op_accuracy(result: dict) -> np.ndarray:
    problems = result["problems"]
    smallest = min(p["ops"] for p in problems)
    return np.array([float(p["correct"]) for p in problems if p["ops"] == smallest])


def _poisoning(result: dict) -> np.ndarray:
    prompts = result["prompts"]
    if "sample_recalls_with_trigger" in prompts[0]:  # leaked by any of its sampled generations (leak@10)
        return np.array([float(max(p["sample_recalls_with_trigger"]) > LEAK_RECALL) for p in prompts])
    return np.array([p["logprob_with_trigger"] - p["logprob_without_trigger"] for p in prompts])


OUTCOMES: dict[str, tuple[str, Callable[[dict], np.ndarray]]] = {
    **{kind: ("loss of the inserted data", _inserted_losses) for kind in LOSS_KINDS},
    "contamination": ("accuracy on the inserted questions",
                      lambda r: np.array([float(i["correct"]) for i in r["items"] if i["tier"] > 0])),
    "knowledge": ("QA accuracy (target in the greedy continuation)",
                  lambda r: np.array([float(p["correct"]) for p in r["probes"]])),
    "math": ("accuracy at the smallest op count", _smallest_op_accuracy),
    "poisoning": ("leak@10 with trigger (context extraction) or gibberish log-likelihood with − without "
                  "trigger (denial of service)", _poisoning),
    "gaussian-watermark": ("mean test statistic x", lambda r: np.asarray(r.get("x", []), dtype=float)),
}
"""Kind → (what it measures, per-item values whose mean is the outcome): the paper's Table 8. verbatim-removal
has none (the paper excludes it: a removal cannot be emulated in a short run). Knowledge reports QA accuracy, as
the paper does; `cpdt_outcome = "metrics.probe_probability"` gives the finer probe probability instead."""


@dataclass(frozen=True)
class CpdtConfig:
    checkpoint: Path
    """The LitGPT checkpoint every row continues from."""
    steps: int | None = None
    """Steps of each row's run (None: the plan's whole run); at most the plan's steps."""
    seeds: int = 3
    """Repeats with plan seed + 0, 1, …: the p-values test over them (with 1, over items; see `analyse`)."""
    jobs: int = 1
    """Rows trained at once, in separate processes (each gets cores / jobs torch threads)."""
    lr: float = 4e-4
    min_lr: float = 4e-5
    warmup_steps: int | None = 0
    micro_batch_size: int = 4
    fraction: float | None = None
    """Rescale each experiment's copies to about this share of a row's tokens (None: the plan's own shares)."""
    device: str | None = None
    logger: str | None = None
    """csv, tensorboard or wandb: each row's training is logged under its run folder (ROW/run/logs/), the matrix
    (each cell's difference and p-value) under out/logs/."""
    train_cmd: str | None = None
    """Train each row with this command instead of injc's trainer (injc.loop.external), from `checkpoint`."""
    target: str | None = None
    """"olmo-core:SEED": each row's build in OLMo-core's order (`build(target=...)`), the folder {data} names."""


@dataclass(frozen=True)
class Outcome:
    experiment: str
    kind: str
    label: str
    path: str | None
    """A `cpdt_outcome` override (dotted path to a scalar), or None for the kind's per-item outcome."""

    def values(self, result: dict) -> tuple[float, np.ndarray | None]:
        """(Y, per-item values or None) from one experiment's eval result."""
        if self.path is None:
            items = OUTCOMES[self.kind][1](result)
            return (float(items.mean()) if len(items) else float("nan")), items
        value = result
        for part in self.path.split("."):
            if not isinstance(value, dict) or part not in value:
                raise InjcError(f"cpdt_outcome {self.path!r} of experiment {self.experiment!r}: the eval result has "
                                f"no {part!r} (it has {', '.join(value) if isinstance(value, dict) else 'a value'})")
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InjcError(f"cpdt_outcome {self.path!r} of experiment {self.experiment!r} is not a number")
        return float(value), None


def outcomes_of(plan: Plan) -> list[Outcome]:
    """Each experiment's outcome; a kind without a default needs `cpdt_outcome` (else a clear error)."""
    outcomes, problems = [], []
    for experiment in plan.experiments:
        path = plan.cpdt_outcomes.get(experiment.name)
        if path is None and experiment.kind not in OUTCOMES:
            problems.append(f"experiment {experiment.name!r} ({experiment.kind}) has no CPDT outcome: set "
                            f"cpdt_outcome = \"metrics.…\" in its table, or leave it out of the CPDT plan")
            continue
        label = path if path is not None else OUTCOMES[experiment.kind][0]
        outcomes.append(Outcome(experiment.name, experiment.kind, label, path))
    if problems:
        raise InjcError(*problems)
    return outcomes


def window(plan: Plan, seed: int) -> int:
    """Seed s trains on the corpus window s runs further in: every row of a seed shares it, seeds differ in it."""
    return plan.corpus.skip_tokens + seed * plan.layout.total_tokens


def _row_names(plan: Plan) -> list[str]:
    return ["none", *(e.name for e in plan.experiments), "all"]


def _row_experiments(row: str) -> list[str] | None:
    if row == "all":
        return None
    return [] if row == "none" else [row]


def _train_and_evaluate(job: dict) -> None:
    """One row of one seed: train from the checkpoint on the row's build, evaluate on the `all` manifest."""
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    folder, config = Path(job["folder"]), CpdtConfig(**job["config"])
    final = folder / "run" / "final"
    state = final / "train_state.json"
    if config.train_cmd is not None:
        final = run_window(config.train_cmd, folder / "run", 0, folder / "build" / MANIFEST_NAME, 0, job["steps"],
                           Path(config.checkpoint), f"row {folder.parent.name}/{folder.name}", progress=False)
    elif not state.is_file() or json.loads(state.read_text())["steps_done"] != job["steps"]:
        train(folder / "build" / MANIFEST_NAME,
              TrainConfig(model=None, init=Path(config.checkpoint), out=folder / "run", steps=job["steps"],
                          force=True, lr=config.lr, min_lr=config.min_lr, warmup_steps=config.warmup_steps,
                          micro_batch_size=config.micro_batch_size, device=config.device, seed=job["seed"],
                          logger=config.logger),
              progress=False)
    report = evaluate_checkpoint(job["all_manifest"], final, progress=False)
    write_atomic(folder / "eval.json", (json.dumps(report) + "\n").encode())


def over_items(differences: np.ndarray) -> tuple[float, list[float]]:
    """Sign-flip p-value and bootstrap 95% CI of the mean of paired per-item differences."""
    if len(differences) < 2:
        return float("nan"), [float("nan"), float("nan")]
    return sign_flip_pvalue(differences), list(bootstrap_ci(lambda d: d.mean(), (differences,)))


def over_seeds(differences: np.ndarray) -> tuple[float, list[float]]:
    """One-sample t-test p-value and t 95% CI of the mean of per-seed differences (training runs are the unit)."""
    from scipy import stats

    if len(differences) < 2:
        return float("nan"), [float("nan"), float("nan")]
    mean, error = differences.mean(), differences.std(ddof=1) / np.sqrt(len(differences))
    if error == 0:
        return (0.0 if mean != 0 else 1.0), [float(mean), float(mean)]
    half = stats.t.ppf(0.975, len(differences) - 1) * error
    return float(stats.ttest_1samp(differences, 0.0).pvalue), [float(mean - half), float(mean + half)]


def analyse(plan: Plan, outcomes: list[Outcome], evals: dict[tuple[int, str], dict], seeds: int) -> dict:
    """The matrix of Y_i^{row} − Y_i^{none} (mean over seeds) with p-values and 95% CIs, and every raw value.

    The unit of replication is the training run: with ≥ 2 seeds, `p_values`/`ci` test the per-seed differences
    (t-test), so a cell is significant when inserting j moves Y_i by more than the run-to-run variation of
    corpus window, placements and items. `p_values_items`/`ci_items` pool the paired per-item differences of
    every seed: they see any consistent shift, also the small generic one of replacing base tokens with other
    data (training is deterministic, so nearly every cell moves a little), and are the primary test only with
    one seed.
    """
    rows = _row_names(plan)
    raw = {row: {o.experiment: [] for o in outcomes} for row in rows}
    items = {row: {o.experiment: [] for o in outcomes} for row in rows}
    for seed in range(seeds):
        for row in rows:
            experiments = evals[(seed, row)]["experiments"]
            for outcome in outcomes:
                value, per_item = outcome.values(experiments[outcome.experiment])
                raw[row][outcome.experiment].append(value)
                items[row][outcome.experiment].append(per_item)
    cells = {key: [] for key in ("matrix", "p_values", "ci", "p_values_items", "ci_items")}
    for row in rows[1:]:
        for values in cells.values():
            values.append([])
        for outcome in outcomes:
            name = outcome.experiment
            per_seed = np.array(raw[row][name]) - np.array(raw["none"][name])
            by_items = (over_items(np.concatenate([a - b for a, b in zip(items[row][name], items["none"][name])]))
                        if outcome.path is None else (float("nan"), [float("nan")] * 2))  # same items every row
            p, interval = over_seeds(per_seed) if seeds > 1 else by_items
            for key, value in zip(cells, (float(per_seed.mean()), p, interval, *by_items)):
                cells[key][-1].append(value)
    return {"rows": rows, "matrix_rows": rows[1:], "test": "seeds" if seeds > 1 else "items",
            "outcomes": [asdict(o) for o in outcomes], **cells, "raw": raw}


def cpdt(plan_path: str | Path, config: CpdtConfig, out: str | Path, progress: bool = True) -> dict:
    """Run the design (resuming finished rows) and write cpdt.json, cpdt.md and cpdt.png under `out`."""
    plan = load_plan(plan_path)
    out = Path(out)
    steps = plan.layout.steps if config.steps is None else config.steps
    if steps > plan.layout.steps:
        raise InjcError(f"--steps {steps:,} is more than the plan's run of {plan.layout.steps:,} steps: each row "
                        f"trains on its own build of the plan")
    if config.seeds < 1 or config.jobs < 1:
        raise InjcError("--seeds and --jobs must be ≥ 1")
    if config.target is not None:
        parse_target(config.target)
    outcomes = outcomes_of(plan)
    if not outcomes:
        raise InjcError(f"plan {str(plan.path)!r} has no experiment to test")
    tokenizer = load_tokenizer(plan.tokenizer.path, plan.tokenizer.eos)
    if config.train_cmd is not None:  # the user's trainer continues it: it need only fit the build
        check_command(config.train_cmd)
        problems = fit_problems(config.checkpoint, tokenizer.vocab_size, plan.layout.seq_len)
        if problems:
            raise InjcError(*problems)
    else:
        checkpoint_config(config.checkpoint, tokenizer.vocab_size, plan.layout.seq_len)
    need = window(plan, config.seeds - 1) + plan.layout.total_tokens + plan.corpus.holdout_tokens
    estimate = estimate_corpus_tokens(plan.corpus, tokenizer)
    if estimate.tokens < need:
        raise InjcError(f"{config.seeds} seeds need {need:,} corpus tokens (one run's window each"
                        f"{', plus holdout_tokens' if plan.corpus.holdout_tokens else ''}); the corpus has "
                        f"{'about ' if not estimate.exact else ''}{estimate.tokens:,}: use fewer --seeds")
    design = {"plan_sha256": plan.sha256, "checkpoint": str(Path(config.checkpoint).resolve()), "steps": steps,
              **{k: v for k, v in asdict(config).items() if k not in ("checkpoint", "steps", "jobs", "device",
                                                                      "logger")
                 and not (k == "target" and v is None)}}  # runs from before --target still resume
    design_path = out / "design.json"
    if design_path.is_file() and json.loads(design_path.read_text()) != design:
        raise InjcError(f"{str(out)!r} holds a CPDT run of another design (plan, checkpoint or settings differ): "
                        f"pick another --out")
    if not design_path.is_file() and out.exists() and any(out.iterdir()):
        raise InjcError(f"--out {str(out)!r} is not empty and holds no CPDT run: pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(design_path, (json.dumps(design, indent=2) + "\n").encode())

    rows = _row_names(plan)
    jobs = []
    for seed in range(config.seeds):
        for row in ["all", *rows[:-1]]:  # `all` first: every row is evaluated on its manifest
            folder = out / f"seed-{seed}" / row
            if not (folder / "build" / MANIFEST_NAME).is_file():
                build(plan.path, folder / "build", BuildOptions(
                    force=True, progress=False, only=_row_experiments(row), seed=plan.seed + seed,
                    skip_tokens=window(plan, seed), fraction=config.fraction, target=config.target))
            if not (folder / "eval.json").is_file():
                jobs.append({"folder": str(folder), "config": {**asdict(config), "checkpoint": str(config.checkpoint)},
                             "steps": steps, "seed": plan.seed + seed,
                             "all_manifest": str(out / f"seed-{seed}" / "all" / "build" / MANIFEST_NAME),
                             "threads": max(1, (os.cpu_count() or 1) // config.jobs) if config.jobs > 1 else 0})
    try:
        _run_jobs(jobs, config.jobs, progress)
    except (Interrupted, KeyboardInterrupt):
        raise Interrupted("finished rows are kept: run the same command again to continue with the others") from None
    evals = {(seed, row): json.loads((out / f"seed-{seed}" / row / "eval.json").read_text())
             for seed in range(config.seeds) for row in rows}
    result = json_safe({"design": {**design, "checkpoint": str(config.checkpoint)},  # as given, not resolved
                        **analyse(plan, outcomes, evals, config.seeds)})
    (out / "cpdt.json").write_text(json.dumps(result, indent=2) + "\n")
    if config.logger is not None:
        log_matrix(result, config.logger, out)
    cpdt_heatmap(result, out / "cpdt.png")
    (out / "cpdt.md").write_text(render(result))
    return result


def log_matrix(result: dict, logger: str, out: Path) -> None:
    """The matrix to the logger (under out/logs/): `ROW/EXPERIMENT/difference` and `.../p_value` per cell."""
    tracker = experiment_logger(logger, out)
    cells = {}
    for r, row in enumerate(result["matrix_rows"]):
        for o, outcome in enumerate(result["outcomes"]):
            for key, values in (("difference", result["matrix"]), ("p_value", result["p_values"])):
                if values[r][o] is not None:
                    cells[f"{row}/{outcome['experiment']}/{key}"] = values[r][o]
    tracker.log_metrics(cells, step=0)
    close_logger(tracker)


def _run_jobs(jobs: list[dict], parallel: int, progress: bool) -> None:
    with tqdm(total=len(jobs), desc="cpdt rows", unit="row", disable=not progress, file=sys.stderr) as bar:
        if parallel == 1:
            for job in jobs:
                _train_and_evaluate(job)
                bar.update()
            return
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_train_and_evaluate, jobs):
                bar.update()


def render(result: dict) -> str:
    """cpdt.md: the matrix as a table, each cell the mean difference with its 95% CI and p-value."""
    names = [o["experiment"] for o in result["outcomes"]]
    lines = ["# CPDT: continual pretraining dependence test", "",
             f"Each row trains {result['design']['steps']:,} steps from `{result['design']['checkpoint']}` with only "
             f"that row's experiments inserted; each cell is Y(row) − Y(none), the mean over "
             f"{result['design']['seeds']} seed(s), with its 95% CI and p-value "
             + ("over seeds (t-test: a training run is the unit of replication)" if result["test"] == "seeds" else
                "over items (one seed: paired per item; it flags any consistent shift, however small)")
             + ". **Bold**: p < 0.05. Interference shows as bold cells off the diagonal; cpdt.json also has "
               "`p_values_items`, the per-item paired test pooled over seeds.",
             "", "| outcome | measures |", "|---|---|"]
    lines += [f"| {o['experiment']} | {o['label']} |" for o in result["outcomes"]]
    lines += ["", "| row | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row, values, p_values, intervals in zip(result["matrix_rows"], result["matrix"], result["p_values"],
                                                result["ci"]):
        cells = []
        for value, p, (low, high) in zip(values, p_values, intervals):
            text = f"{signed(value)} [{signed(low)}, {signed(high)}] {p_text(p)}"
            cells.append(f"**{text}**" if p is not None and p < 0.05 else text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "![cpdt](cpdt.png)", ""]
    return "\n".join(lines)

