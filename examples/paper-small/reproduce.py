"""The paper's findings at toy scale, end to end on 2 CPU cores (5 to 10 minutes):

    python examples/paper-small/reproduce.py [--out runs/paper-small]

build (injected, and the clean control with `--clean`) → train a tiny LitGPT model on each (the clean build twice,
with model seeds 0 and 1) → eval each, then write examples/paper-small/results.md and its plots. It checks three
claims, honestly measured:
1. memorization rises with repetitions (canaries: 32× clearly below the never-inserted controls, 1× near them);
2. contamination uplift rises with repetitions;
3. minimal impact: the injected run's held-out loss differs from the clean control's by no more than a change of
   the model's seed moves it (paired by held-out row, with bootstrap intervals).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

import injc
from injc.evals.report import evaluate
from injc.train.trainer import TrainConfig, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLAN = ROOT / "examples" / "demo" / "paper-small.toml"
MODEL = ROOT / "examples" / "demo" / "tiny-gpt.yaml"


def run(plan: Path, out: Path, clean: bool, seed: int = 0) -> dict:
    """Build (once per variant), train with this model seed, evaluate."""
    build = "clean" if clean else "injected"
    name = build + (f"-seed{seed}" if seed else "")
    if not (out / f"build-{build}" / "manifest.json").exists() or not seed:
        injc.build(plan, out / f"build-{build}", clean=clean, force=True, progress=False)
    train(out / f"build-{build}" / "manifest.json",
          TrainConfig(model=str(MODEL), out=out / f"run-{name}", lr=2e-3, min_lr=2e-4, warmup_steps=20, seed=seed,
                      force=True),
          progress=False)
    return evaluate(out / f"build-{build}" / "manifest.json", [out / f"run-{name}" / "final"], out / f"report-{name}",
                    progress=False)


def paired(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean of a − b over the same held-out rows, with a bootstrap 95% interval (rows resampled, 10,000 times)."""
    difference = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, len(difference), (10_000, len(difference)))].mean(axis=1)
    return float(difference.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def summarize(injected: dict, clean: dict, other_seed: dict, minutes: float, plan: Path) -> str:
    canaries = injected["experiments"]["memp"]["metrics"]["conditions"]
    clean_canaries = clean["experiments"]["memp"]["metrics"]["conditions"]
    tiers = injected["experiments"]["bench"]["metrics"]["tiers"]
    clean_tiers = clean["experiments"]["bench"]["metrics"]["tiers"]
    held, held_clean = injected["heldout"]["loss"], clean["heldout"]["loss"]
    lines = [
        "# paper-small: results", "",
        f"Produced by `python examples/paper-small/reproduce.py` in {minutes:.1f} minutes on this machine's CPU "
        f"(model: examples/demo/tiny-gpt.yaml; plan: {plan.resolve().relative_to(ROOT)}).", "",
        "## 1. Memorization by repetitions (canaries: host dialogue + 8 random tokens)", "",
        "| repetitions | member loss | never-inserted loss | Δ [95% CI] | Cohen's d | p | TPR at achieved FPR "
        "(target 1%; non-members) | clean run Δ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, c in canaries.items():
        lines.append(f"| {c['repetitions']}× | {c['mean_member']:.3f} | {c['mean_nonmember']:.3f} | "
                     f"{c['difference']:+.3f} [{c['difference_ci95'][0]:+.3f}, {c['difference_ci95'][1]:+.3f}] | "
                     f"{c['effect_size_d']:.2f} | {c['p_value']:.4f} | {c['membership']['tpr']:.2f} at "
                     f"{c['membership']['fpr']:.3f} ({c['membership']['nonmembers']}) | "
                     f"{clean_canaries[key]['difference']:+.3f} |")
    lines += ["", "## 2. Contamination uplift by repetitions (accuracy minus holdout accuracy)", "",
              "| repetitions | questions | accuracy | uplift [95% CI] | p | clean run uplift |",
              "|---|---|---|---|---|---|"]
    for key in sorted(tiers, key=int):
        t, c = tiers[key], clean_tiers[key]
        uplift = (f"{t['uplift_vs_holdout']:+.3f} [{t['uplift_ci95'][0]:+.3f}, {t['uplift_ci95'][1]:+.3f}] | "
                  f"{t['p_value']:.4f} | {c['uplift_vs_holdout']:+.3f}") if key != "0" else "— | — | —"
        label = f"{key}× (holdout)" if key == "0" else f"{key}×"
        lines.append(f"| {label} | {t['questions']} | {t['accuracy']:.3f} | {uplift} |")
    rows = {name: report["heldout"]["row_losses"] for name, report in
            (("injected", injected), ("clean", clean), ("other", other_seed))}
    effect, seed_spread = paired(rows["injected"], rows["clean"]), paired(rows["other"], rows["clean"])
    within = abs(effect[0]) <= abs(seed_spread[0])
    lines += ["", "## 3. Minimal impact: held-out loss (never-trained rows of the reserved tail)", "",
              "Each run scores the same held-out rows; differences are paired by row (bootstrap 95% interval over "
              f"the {len(rows['clean'])} rows).", "",
              "| run | held-out loss | minus clean control (model seed 0) [95% CI] |", "|---|---|---|",
              f"| injected (model seed 0) | {held:.4f} | {effect[0]:+.4f} [{effect[1]:+.4f}, {effect[2]:+.4f}] "
              f"({effect[0] / held_clean:+.2%}) |",
              f"| clean control (model seed 0) | {held_clean:.4f} | — |",
              f"| clean control (model seed 1) | {other_seed['heldout']['loss']:.4f} | {seed_spread[0]:+.4f} "
              f"[{seed_spread[1]:+.4f}, {seed_spread[2]:+.4f}] ({seed_spread[0] / held_clean:+.2%}) |", "",
              f"The injected run's difference is {'within' if within else 'LARGER than'} the difference between "
              "two clean runs that differ only in the model's seed. One seed pair is one draw of that spread, not "
              "its distribution: the comparison says whether injection moved the held-out loss by more than a "
              "change of seed did once, not that it had no effect.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "paper-small")
    parser.add_argument("--plan", type=Path, default=PLAN, help="a variant of the plan (same experiment names)")
    args = parser.parse_args()
    started = time.perf_counter()
    injected, clean = run(args.plan, args.out, clean=False), run(args.plan, args.out, clean=True)
    other_seed = run(args.plan, args.out, clean=True, seed=1)
    text = summarize(injected, clean, other_seed, (time.perf_counter() - started) / 60, args.plan)
    (HERE / "results").mkdir(exist_ok=True)
    for plot in ("memp_canaries.png", "bench_contamination.png"):
        shutil.copyfile(args.out / "report-injected" / plot, HERE / "results" / plot)
    text += "\n![canaries](results/memp_canaries.png)\n![contamination](results/bench_contamination.png)\n"
    (HERE / "results.md").write_text(text)
    (HERE / "results" / "reports.json").write_text(json.dumps({"injected": injected, "clean": clean,
                                                               "clean_seed1": other_seed}) + "\n")
    print(text)


if __name__ == "__main__":
    main()
