"""The paper's findings at toy scale, end to end on 2 CPU cores (about 10 minutes):

    python examples/paper-small/reproduce.py [--out runs/paper-small]

build (injected, and the clean control with `--clean`) → train a tiny LitGPT model on each, with model seeds 0
and 1 → eval each, then write examples/paper-small/results.md and its plots. It tests three claims, each with its
interval and the smallest effect it could detect (80% power):
1. memorization rises with repetitions (canary members against 500 never-inserted ones, and each condition
   against the next);
2. contamination uplift rises with repetitions (100 questions a tier, and each tier against the next);
3. minimal impact: injection moves the held-out loss no more than a change of the model's seed does (paired by
   held-out row; two seeds of each build).
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

import injc
from injc.evals.report import evaluate
from injc.evals.stats import compare
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
                    progress=False, force=True)


POWER_Z = 1.959964 + 0.841621
"""z(0.975) + z(0.80): a true difference of POWER_Z standard errors is found significant (two-sided, α = 0.05)
80% of the time, so POWER_Z × SE is the smallest effect a comparison of this size detects with 80% power."""


def paired(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float, float]:
    """Mean of a − b over the same held-out rows, with a bootstrap 95% interval (rows resampled, 10,000 times) and
    the smallest difference detectable with 80% power."""
    difference = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, len(difference), (10_000, len(difference)))].mean(axis=1)
    detectable = POWER_Z * difference.std(ddof=1) / np.sqrt(len(difference))
    return (float(difference.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)),
            float(detectable))


def contrast(a: list[float], b: list[float]) -> dict:
    """a against b (independent items): difference of means, bootstrap 95% interval, permutation p, Cohen's d, and
    the smallest difference detectable with 80% power at these sizes and spreads."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    result = compare(a, b, ("a", "b"))
    result["detectable"] = float(POWER_Z * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    result["distinguishable"] = not result["difference_ci95"][0] <= 0 <= result["difference_ci95"][1]
    return result


def _contrast_row(label: str, c: dict, digits: int = 3) -> str:
    return (f"| {label} | {c['n'][0]} vs {c['n'][1]} | {_interval(c, digits)} | {c['effect_size_d']:+.2f} | "
            f"{c['p_value']:.4f} | ≥ {c['detectable']:.{digits}f} | {'yes' if c['distinguishable'] else 'no'} |")


CONTRAST_HEADER = ["| comparison | items | difference [95% CI] | d | p | detectable with 80% power | "
                   "distinguishable (CI excludes 0) |",
                   "|---|---|---|---|---|---|---|"]


def _minus_clean(injected: dict, clean: dict, experiment: str, field: str) -> dict[int, float]:
    """Each item's value in the injected run minus its value in the clean run (the same items: same plan)."""
    before = {i["item"]: float(i[field]) for i in clean["experiments"][experiment]["items"]}
    return {i["item"]: float(i[field]) - before[i["item"]] for i in injected["experiments"][experiment]["items"]}


def _interval(c: dict, digits: int = 3) -> str:
    low, high = c["difference_ci95"]
    return f"{c['difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def summarize(injected: dict, clean: dict, seed1: dict, minutes: float, plan: Path) -> str:
    """results.md: the seed-0 runs carry the experiments' tables; `seed1` ({"injected", "clean"}) the seed contrasts."""
    canaries = injected["experiments"]["memp"]["metrics"]["conditions"]
    clean_canaries = clean["experiments"]["memp"]["metrics"]["conditions"]
    tiers = injected["experiments"]["bench"]["metrics"]["tiers"]
    clean_tiers = clean["experiments"]["bench"]["metrics"]["tiers"]
    lines = [
        "# paper-small: results", "",
        f"Produced by `python examples/paper-small/reproduce.py` in {minutes:.1f} minutes on this machine's CPU "
        f"(model: examples/demo/tiny-gpt.yaml; plan: {plan.resolve().relative_to(ROOT)}).", "",
        "Every comparison gives its difference with a bootstrap 95% interval, Cohen's d, a permutation p-value, and "
        "the smallest difference it would detect with 80% power (two-sided α = 0.05, from the observed spreads): "
        "a comparison whose interval covers 0 can rule out effects larger than that, not smaller ones.", "",
        "The clean run (same plan, nothing inserted) scores the same items: an item set that differs by chance (one "
        "condition's random canaries easier than another's) shows there as well, so each comparison is also given "
        "minus the clean run's, item by item (injected-run value − clean-run value of the same canary or question).",
        "",
        "## 1. Memorization by repetitions (canaries: host dialogue + 8 random tokens)", "",
        "| repetitions | member loss | never-inserted loss | Δ [95% CI] | Cohen's d | p | detectable (80% power) | "
        "TPR at achieved FPR (target 1%; non-members) | clean run Δ | Δ minus clean run's [95% CI] | p |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    items = injected["experiments"]["memp"]["items"]
    adjusted = _minus_clean(injected, clean, "memp", "loss")
    nonmembers = [i["loss"] for i in items if not i["member"]]
    control = [adjusted[i["item"]] for i in items if not i["member"]]
    members, members_adjusted = {}, {}
    for c in canaries.values():
        mine = [i for i in items if i["member"] and i["repetitions"] == c["repetitions"]]
        members[c["repetitions"]] = [i["loss"] for i in mine]
        members_adjusted[c["repetitions"]] = [adjusted[i["item"]] for i in mine]
    for key, c in canaries.items():
        m, net = c["membership"], contrast(members_adjusted[c["repetitions"]], control)
        lines.append(f"| {c['repetitions']}× | {c['mean_member']:.3f} | {c['mean_nonmember']:.3f} | "
                     f"{c['difference']:+.3f} [{c['difference_ci95'][0]:+.3f}, {c['difference_ci95'][1]:+.3f}] | "
                     f"{c['effect_size_d']:.2f} | {c['p_value']:.4f} | "
                     f"≥ {contrast(members[c['repetitions']], nonmembers)['detectable']:.3f} | "
                     f"{m['tpr']:.2f} [{m['tpr_ci95'][0]:.2f}, {m['tpr_ci95'][1]:.2f}] at {m['fpr']:.3f} "
                     f"({m['nonmembers']}) | {clean_canaries[key]['difference']:+.3f} | {_interval(net)} | "
                     f"{net['p_value']:.4f} |")
    repetitions = sorted(members)
    lines += ["", "Neighbouring conditions (member loss of the more repeated minus the less repeated, each canary's "
              "minus its loss in the clean run):", "", *CONTRAST_HEADER]
    for low, high in zip(repetitions, repetitions[1:]):
        lines.append(_contrast_row(f"{high}× − {low}×", contrast(members_adjusted[high], members_adjusted[low])))
    lines += ["", "## 2. Contamination uplift by repetitions (accuracy minus holdout accuracy)", "",
              "| repetitions | questions | accuracy | uplift [95% CI] | Cohen's d | p | detectable (80% power) | "
              "clean run uplift | uplift minus clean run's [95% CI] | p |", "|---|---|---|---|---|---|---|---|---|---|"]
    questions = injected["experiments"]["bench"]["items"]
    solved = _minus_clean(injected, clean, "bench", "correct")
    correct = {int(key): [float(i["correct"]) for i in questions if i["tier"] == int(key)] for key in tiers}
    gained = {int(key): [solved[i["item"]] for i in questions if i["tier"] == int(key)] for key in tiers}
    for key in sorted(tiers, key=int):
        t, c = tiers[key], clean_tiers[key]
        if key == "0":
            lines.append(f"| {key}× (holdout) | {t['questions']} | {t['accuracy']:.3f} | — | — | — | — | — | — | — |")
            continue
        net = contrast(gained[int(key)], gained[0])
        lines.append(f"| {key}× | {t['questions']} | {t['accuracy']:.3f} | {t['uplift_vs_holdout']:+.3f} "
                     f"[{t['uplift_ci95'][0]:+.3f}, {t['uplift_ci95'][1]:+.3f}] | {t['effect_size_d']:.2f} | "
                     f"{t['p_value']:.4f} | ≥ {contrast(correct[int(key)], correct[0])['detectable']:.3f} | "
                     f"{c['uplift_vs_holdout']:+.3f} | {_interval(net)} | {net['p_value']:.4f} |")
    inserted = sorted(tier for tier in correct if tier)
    lines += ["", "Neighbouring tiers (accuracy of the more repeated minus the less repeated, each question's "
              "correctness minus its correctness in the clean run):", "", *CONTRAST_HEADER]
    for low, high in zip(inserted, inserted[1:]):
        lines.append(_contrast_row(f"{high}× − {low}×", contrast(gained[high], gained[low])))
    runs = {"injected, seed 0": injected, "injected, seed 1": seed1["injected"], "clean, seed 0": clean,
            "clean, seed 1": seed1["clean"]}
    rows = {name: report["heldout"]["row_losses"] for name, report in runs.items()}
    contrasts = {"injection (model seed 0)": ("injected, seed 0", "clean, seed 0"),
                 "injection (model seed 1)": ("injected, seed 1", "clean, seed 1"),
                 "model seed (clean build)": ("clean, seed 1", "clean, seed 0"),
                 "model seed (injected build)": ("injected, seed 1", "injected, seed 0")}
    measured = {name: paired(rows[a], rows[b]) for name, (a, b) in contrasts.items()}
    injection = [abs(measured[name][0]) for name in contrasts if name.startswith("injection")]
    seed = [abs(measured[name][0]) for name in contrasts if name.startswith("model seed")]
    verdict = ("smaller than either seed contrast" if max(injection) < min(seed) else "larger than either seed "
               "contrast" if min(injection) > max(seed) else "within the range of the seed contrasts")
    lines += ["", "## 3. Minimal impact: held-out loss (never-trained rows of the reserved tail)", "",
              "Four runs: the injected and the clean build, each trained with model seeds 0 and 1. Each run scores "
              f"the same {len(rows['clean, seed 0'])} held-out rows; differences are paired by row (bootstrap 95% "
              "interval over rows: it covers the rows, not the run-to-run spread, which the seed contrasts show).",
              "", "| run | held-out loss |", "|---|---|"]
    lines += [f"| {name} | {report['heldout']['loss']:.4f} |" for name, report in runs.items()]
    lines += ["", "| contrast | runs | difference [95% CI] | relative | detectable (80% power) |",
              "|---|---|---|---|---|"]
    for name, (a, b) in contrasts.items():
        d = measured[name]
        lines.append(f"| {name} | {a} − {b} | {d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] | "
                     f"{d[0] / runs[b]['heldout']['loss']:+.2%} | ≥ {d[3]:.4f} |")
    lines += ["", f"Both injection contrasts are {verdict} in size. Two seeds are two "
              "draws of the run-to-run spread, not its distribution: the comparison says whether injection moved the "
              "held-out loss by more than a change of seed did, not that it had no effect.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs") / "paper-small", help="relative to the repository")
    parser.add_argument("--plan", type=Path, default=PLAN, help="a variant of the plan (same experiment names)")
    args = parser.parse_args()
    os.chdir(ROOT)  # the results name every path relative to the repository, as the commands above give them
    started = time.perf_counter()
    injected, clean = run(args.plan, args.out, clean=False), run(args.plan, args.out, clean=True)
    seed1 = {"injected": run(args.plan, args.out, clean=False, seed=1),
             "clean": run(args.plan, args.out, clean=True, seed=1)}
    text = summarize(injected, clean, seed1, (time.perf_counter() - started) / 60, args.plan)
    (HERE / "results").mkdir(exist_ok=True)
    for plot in ("memp_canaries.png", "bench_contamination.png"):
        shutil.copyfile(args.out / "report-injected" / plot, HERE / "results" / plot)
    text += "\n![canaries](results/memp_canaries.png)\n![contamination](results/bench_contamination.png)\n"
    (HERE / "results.md").write_text(text)
    (HERE / "results" / "reports.json").write_text(json.dumps({"injected": injected, "clean": clean,
                                                               "injected_seed1": seed1["injected"],
                                                               "clean_seed1": seed1["clean"]}) + "\n")
    print(text)


if __name__ == "__main__":
    main()
