"""Minimal impact at the paper's share: ten experiment kinds in 1.8% of a run's tokens, against the clean run.

    python examples/paper-small/impact.py [--out runs/paper-impact] [--summarize-only]

build examples/demo/paper-impact.toml three ways (injected; the clean control, `--clean`; and only the seven kinds
that insert no rows of the reserved tail) → train the demo's tiny LitGPT model on each with model seeds 0 and 1 →
`injc eval` each, with two lm-eval benchmarks (the contamination experiment's never-inserted tier, written by
`injc tasks`, and 400 other survey questions shipped in examples/demo/payloads/paper-small/questions.jsonl) →
`injc compare` each against the clean run of its seed, the other clean seed sizing the margin →
examples/paper-small/impact.md and its plots. The question: does replacing 1.8% of the tokens move the held-out loss
and benchmark accuracy by more than a change of seed does?
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

import injc
from injc.compiler.options import BuildOptions
from injc.evals.benchmarks import write_contamination_tasks
from injc.evals.compare import compare, table_row
from injc.evals.report import evaluate
from injc.train.trainer import TrainConfig, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLAN = ROOT / "examples" / "demo" / "paper-impact.toml"
MODEL = ROOT / "examples" / "demo" / "tiny-gpt.yaml"
QUESTIONS = ROOT / "examples" / "demo" / "payloads" / "paper-small" / "questions.jsonl"
TAIL_KINDS = ("iid", "forgetting", "verbatim-removal")
"""The kinds whose inserted rows come from the reserved tail, the stretch of corpus the held-out rows are read from."""
POWER_Z = 1.959964 + 0.841621
"""z(0.975) + z(0.80): the smallest paired difference detected with 80% power is POWER_Z standard errors."""


def survey_task(folder: Path) -> str:
    """The shipped survey questions as a local lm-eval task (OLMES phrasing), written into `folder`."""
    (folder / "survey_qa.yaml").write_text(
        "task: survey_qa\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {json.dumps(str(QUESTIONS))}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_target: answer\ndoc_to_choice: choices\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")
    return "survey_qa"


def run(out: Path, build: str, seed: int, tasks: list[str]) -> Path:
    """Train the tiny model on one build with one model seed and evaluate it; returns the report folder."""
    name = f"{build}-seed{seed}"
    manifest = out / f"build-{build}" / "manifest.json"
    train(manifest, TrainConfig(model=str(MODEL), out=out / f"run-{name}", lr=2e-3, min_lr=2e-4, warmup_steps=20,
                                seed=seed, force=True), progress=False)
    evaluate(manifest, [out / f"run-{name}" / "final"], out / f"report-{name}", progress=False, force=True,
             benchmarks=tasks, tasks_dir=out / "tasks")
    return out / f"report-{name}"


def detectable(report_a: Path, report_b: Path) -> float:
    """The smallest held-out-loss difference the paired comparison detects with 80% power (α = 0.05)."""
    a, b = (np.array(json.loads((r / "report.json").read_text())["heldout"]["row_losses"])
            for r in (report_a, report_b))
    return float(POWER_Z * (b - a).std(ddof=1) / np.sqrt(len(a)))


def training_loss(out: Path, run_name: str, steps: slice) -> float:
    """A run's mean training loss over `steps` (its metrics.jsonl)."""
    lines = (out / f"run-{run_name}" / "metrics.jsonl").read_text().splitlines()
    return float(np.mean([json.loads(line)["loss"] for line in lines][steps]))


def verdicts(comparisons: list[dict]) -> str:
    """How the held-out comparisons of both seeds fare against the seed spread, in words."""
    shown = [bool(c.get("equivalent")) for c in comparisons]
    distinct = sum(not (c["difference_ci95"][0] <= 0 <= c["difference_ci95"][1]) for c in comparisons)
    words = ("both equivalent within the seed spread" if all(shown) else
             "neither shown equivalent within the seed spread" if not any(shown) else
             "one of the two shown equivalent within the seed spread")
    return words + (f"; {distinct} of the two intervals excludes 0: a difference smaller than the seed spread, yet "
                    f"resolved by 64 paired rows" if distinct else "")


def benchmark_paragraph(results: dict) -> str:
    """The benchmarks' differences across the runs, and what their intervals allow."""
    rows = [r for result in results.values() for r in result["benchmarks"].values()]
    widest = max((r["difference_ci95"][1] - r["difference_ci95"][0]) / 2 for r in rows)
    covered = all(r["difference_ci95"][0] <= 0 <= r["difference_ci95"][1] for r in rows)
    margins = sorted({round(r["margin"], 4) for r in rows if "margin" in r})
    return (f"Benchmark accuracy moved by at most {max(abs(r['difference']) for r in rows):.3f} in any run, "
            + ("every interval covering 0" if covered else "not every interval covering 0")
            + f"; none can be shown equivalent at the seed spread ({', '.join(f'{m:.3f}' for m in margins)}): with "
            f"100 and 400 questions near chance the intervals reach ±{widest:.3f}, wider than that margin, so these "
            "benchmarks neither show nor rule out an effect of that size.")


def summarize(out: Path) -> str:
    """impact.md from the runs in `out`: the comparisons' tables, then what they show, from the numbers."""
    minutes = json.loads((out / "timing.json").read_text())["minutes"]
    share = {build: injc.inspect(out / f"build-{build}" / "manifest.json").to_json()["totals"]["fraction_of_run"]
             for build in ("injected", "tailfree")}
    results = {(build, seed): json.loads((out / f"compare-{build}-seed{seed}" / "compare.json").read_text())
               for build in ("injected", "tailfree") for seed in (0, 1)}
    lines = ["# paper-small: minimal impact at the paper's share", "",
             f"Produced by `python examples/paper-small/impact.py` in {minutes:.1f} minutes on this machine's CPU "
             f"(model: examples/demo/tiny-gpt.yaml; plan: examples/demo/paper-impact.toml, ten experiment kinds "
             f"replacing {share['injected']:.2%} of the 2,048,000 training tokens; the paper's run replaces 1.8%).", "",
             "Six runs, each with model seeds 0 and 1: the injected build; its clean twin (`injc build --clean`: the "
             "same base tokens, nothing inserted); and the same plan writing only the seven kinds that insert no "
             f"rows of the reserved tail ({share['tailfree']:.2%} of the tokens; `BuildOptions(only=...)`, so the "
             "payloads and held-out rows stay the whole plan's). `injc compare` sets each against the clean run of "
             "its seed: the held-out loss paired by row (64 never-trained rows of the reserved tail), and each "
             "benchmark's accuracy paired by question (lm-evaluation-harness, ranked classification): "
             "`injc_bench_holdout` is the contamination experiment's 100 never-inserted questions (`injc tasks`), "
             "`survey_qa` 400 other questions of the same kind. The equivalence margin of each metric is the seed "
             "spread: the difference between the two clean seeds on it. Equivalent means two one-sided paired "
             "t-tests place the difference within ±margin at α = 0.05.", ""]
    for (build, seed), result in results.items():
        title = "all ten experiments" if build == "injected" else "without iid, forgetting, verbatim-removal"
        power = detectable(out / f"report-clean-seed{seed}", out / f"report-{build}-seed{seed}")
        lines += [f"## Model seed {seed}, {title}: injected against clean", "",
                  "| metric | clean | injected | injected − clean [95% CI] | p (sign-flip) | n | equivalent within "
                  "the seed spread |", "|---|---|---|---|---|---|---|",
                  table_row("held-out loss", result["heldout_loss"])]
        lines += [table_row(f"{task} accuracy", r) for task, r in result["benchmarks"].items()]
        lines += ["", f"The paired held-out comparison detects a difference of {power:.4f} or more with 80% power "
                  "(two-sided α = 0.05, from the observed spread of the row differences).", ""]
    held = {key: r["heldout_loss"] for key, r in results.items()}
    jump = {name: training_loss(out, name, slice(395, 450))
            for name in ("injected-seed0", "clean-seed0", "tailfree-seed0")}
    lines += ["## What this shows and what it does not", "",
              f"With all ten experiments the held-out loss fell by {-held['injected', 0]['difference']:.3f} and "
              f"{-held['injected', 1]['difference']:.3f} (seeds 0 and 1), against a seed spread of "
              f"{held['injected', 0].get('margin', float('nan')):.3f}: not minimal impact as measured here. Without "
              f"the three kinds that insert rows of the reserved tail it moved by "
              f"{held['tailfree', 0]['difference']:+.3f} [{held['tailfree', 0]['difference_ci95'][0]:+.3f}, "
              f"{held['tailfree', 0]['difference_ci95'][1]:+.3f}] and {held['tailfree', 1]['difference']:+.3f} "
              f"[{held['tailfree', 1]['difference_ci95'][0]:+.3f}, {held['tailfree', 1]['difference_ci95'][1]:+.3f}]"
              f" ({verdicts([held['tailfree', 0], held['tailfree', 1]])}). Why the three kinds move it: iid, "
              "forgetting and verbatim-removal insert rows drawn from "
              "the reserved tail, the corpus's last 80,000 tokens, which hold the standard library's packages, the "
              "text the run itself reaches only from about step 400 (this corpus is ordered by source) and the text "
              "the held-out rows are read from. The injected runs meet that text early; at the switch their "
              f"training loss over steps 395–450 is {jump['injected-seed0']:.2f} against "
              f"{jump['clean-seed0']:.2f} for the clean run ({jump['tailfree-seed0']:.2f} without the three kinds), "
              "and they score the held-out rows better. That is a property of a corpus ordered by source with its "
              "pool at the end, not of injecting 1.8% of the tokens: where the tail is drawn from the training "
              "distribution (a shuffled corpus, as at the paper's scale) this has nothing to act on (not tested "
              "here); a plan measuring minimal "
              "impact on such a corpus should reserve its held-out rows away from the pool the experiments draw "
              "on, or shuffle the corpus first.", "",
              benchmark_paragraph(results), "",
              "What it does not show: the paper's scale. Two seeds are two draws of the run-to-run spread, not its "
              "distribution, so the margin is itself noisy; the benchmarks are synthetic questions near chance for "
              "a model this small, so accuracy differences have little room to show; and an interval that covers 0 "
              "rules out effects larger than the detectable size, not smaller ones.", "",
              "Plots (per comparison): `differences.png` (each difference with its interval and the margin) and "
              "`training.png` (both runs' loss and gradient-norm curves), in impact/compare-*/.", ""]
    return "\n".join(lines) + "\n"


def tail_free(plan: Path) -> list[str]:
    """The plan's experiments that insert no rows of the reserved tail (all but iid, forgetting, verbatim-removal)."""
    return [e.name for e in injc.load_plan(plan).experiments if e.kind not in TAIL_KINDS]


def produce(out: Path) -> None:
    """Build, train, evaluate and compare every run into `out` (about 15 minutes on 2 CPU cores)."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for build in ("injected", "clean"):
        injc.build(PLAN, out / f"build-{build}", clean=build == "clean", force=True, progress=False)
    # the same plan writing only the experiments that take no tail rows: its payloads, and so the held-out rows,
    # are the whole plan's (BuildOptions.only), so its runs pair row by row with the clean runs
    injc.build(PLAN, out / "build-tailfree", BuildOptions(only=tail_free(PLAN), force=True, progress=False))
    shutil.rmtree(out / "tasks", ignore_errors=True)
    tasks = [name for name in write_contamination_tasks(out / "build-injected" / "manifest.json", out / "tasks")
             if name.endswith("_holdout")] + [survey_task(out / "tasks")]
    reports = {(build, seed): run(out, build, seed, tasks) for build in ("injected", "clean", "tailfree")
               for seed in (0, 1)}
    for build in ("injected", "tailfree"):
        for seed in (0, 1):
            compare(reports["clean", seed], reports[build, seed], out / f"compare-{build}-seed{seed}",
                    seeds=[reports["clean", 1 - seed]], force=True,
                    runs=(out / f"run-clean-seed{seed}", out / f"run-{build}-seed{seed}"))
    (out / "timing.json").write_text(json.dumps({"minutes": (time.perf_counter() - started) / 60}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "paper-impact")
    parser.add_argument("--summarize-only", action="store_true",
                        help="Write impact.md and its plots again from the runs already in --out.")
    args = parser.parse_args()
    if not args.summarize_only:
        produce(args.out)
    (HERE / "impact.md").write_text(summarize(args.out))
    results = HERE / "impact"
    shutil.rmtree(results, ignore_errors=True)
    for build in ("injected", "tailfree"):
        for seed in (0, 1):
            name = f"compare-{build}-seed{seed}"
            shutil.copytree(args.out / name, results / name)
    print(f"wrote {HERE / 'impact.md'} and {results}/")


if __name__ == "__main__":
    main()
