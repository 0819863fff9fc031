"""`injc compare`: the paper's minimal-impact table, a run with the experiments against one without.

Two `injc eval` reports of checkpoints on the same build (or of builds that share their held-out tail, as a build
and its `--clean` twin do): the held-out loss compared row by row, and each lm-eval benchmark's accuracy item by
item, each as the mean paired difference (B − A) with a bootstrap 95% interval and a sign-flip p-value. Equivalence
is two one-sided paired t-tests (TOST) at a margin: one the user gives, or the seed-to-seed spread measured from
further reports of clean runs that differ only in the model seed (the largest |difference| of the metric between
the first report and each of them). Equivalent means the difference is shown to lie within ±margin at the 5% level;
not shown equivalent is not shown different: with few rows or items the test has little power.
"""

import json
import math
from pathlib import Path

import numpy as np

from injc.errors import InjcError
from injc.evals.stats import bootstrap_ci, sign_flip_method, sign_flip_pvalue

ALPHA = 0.05


def read_report(path: str | Path) -> dict:
    """One checkpoint's report.json (a report folder or the file); a report of several checkpoints gives its last."""
    path = Path(path)
    file = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise InjcError(f"report {str(path)!r} cannot be read: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise InjcError(f"report {str(path)!r} is not JSON ({error.msg}); give an injc eval report") from None
    if not isinstance(report, dict) or not ("experiments" in report or "checkpoints" in report):
        raise InjcError(f"report {str(path)!r} is not an injc eval report (no experiments or checkpoints)")
    return report["checkpoints"][-1] if "checkpoints" in report else report


def tost_pvalue(differences: np.ndarray, margin: float) -> float:
    """p-value of two one-sided paired t-tests that the mean difference lies within (−margin, margin): the larger
    of P(T ≥ t_low) and P(T ≤ t_high), t_low = (mean + margin)/se, t_high = (mean − margin)/se, T ~ t(n − 1)."""
    from scipy.stats import t as student

    differences = np.asarray(differences, float)
    n = len(differences)
    if n < 2 or not margin > 0:
        return float("nan")
    se = differences.std(ddof=1) / math.sqrt(n)
    mean = differences.mean()
    if se == 0:
        return 0.0 if abs(mean) < margin else 1.0
    return float(max(student.sf((mean + margin) / se, n - 1), student.cdf((mean - margin) / se, n - 1)))


def paired(a: np.ndarray, b: np.ndarray, margin: float | None) -> dict:
    """The paired comparison of b against a (same rows or items, in the same order)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    differences = b - a
    result = {"a": float(a.mean()), "b": float(b.mean()), "difference": float(differences.mean()),
              "difference_ci95": list(bootstrap_ci(lambda d: d.mean(), (differences,))),
              "p_value": sign_flip_pvalue(differences), "p_method": sign_flip_method(len(differences)),
              "n": int(len(differences))}
    if margin is not None:
        p = tost_pvalue(differences, margin)
        result.update({"margin": float(margin), "equivalence_p_value": p, "equivalent": bool(p < ALPHA)})
    return result


def heldout_rows(report: dict, name: str) -> np.ndarray:
    heldout = report.get("heldout")
    if not heldout or not heldout.get("row_losses"):
        raise InjcError(f"report {name} has no held-out loss (its build keeps no reserved tail: [corpus] "
                        f"holdout_tokens)")
    return np.asarray(heldout["row_losses"], float)


def benchmark_items(report: dict) -> dict[str, dict[int, float]]:
    """task → {doc_id: acc} of a report's lm-eval results."""
    return {task: {item["doc_id"]: item["acc"] for item in result["items"] if "acc" in item}
            for task, result in (report.get("benchmarks") or {}).get("tasks", {}).items()}


def seed_spread(first: dict, seeds: list[dict]) -> dict[str, float]:
    """metric → the largest |difference| between the first report and each further clean seed's."""
    spread = {"heldout_loss": max(abs(float(s["heldout"]["loss"]) - float(first["heldout"]["loss"])) for s in seeds)
              if all(r.get("heldout") for r in (first, *seeds)) else None}
    seed_items = [benchmark_items(s) for s in seeds]
    for task, items in benchmark_items(first).items():
        means = [np.mean(list(found.get(task, {}).values()) or [np.nan]) for found in seed_items]
        spread[task] = float(max(abs(m - np.mean(list(items.values()))) for m in means))
    return spread


def compare_reports(a: dict, b: dict, seeds: list[dict] = (), margin: float | None = None,
                    names: tuple[str, str] = ("A", "B")) -> dict:
    """The comparison injc compare writes: held-out loss per row and each common benchmark per item."""
    spread = seed_spread(a, list(seeds)) if seeds else {}

    def margin_for(metric: str) -> float | None:
        return margin if margin is not None else spread.get(metric)

    rows_a, rows_b = heldout_rows(a, names[0]), heldout_rows(b, names[1])
    if len(rows_a) != len(rows_b):
        raise InjcError(f"the reports scored different held-out rows ({len(rows_a)} and {len(rows_b)}): compare "
                        f"checkpoints evaluated on the same build (or on a build and its --clean twin)")
    result = {"a": a["checkpoint"], "b": b["checkpoint"], "alpha": ALPHA,
              "margin_source": "given" if margin is not None else ("seed spread" if seeds else None),
              "seed_spread": spread or None, "clean_seeds": len(seeds),
              "heldout_loss": paired(rows_a, rows_b, margin_for("heldout_loss")), "benchmarks": {}}
    items_a, items_b = benchmark_items(a), benchmark_items(b)
    for task in sorted(set(items_a) & set(items_b)):
        shared = sorted(set(items_a[task]) & set(items_b[task]))
        if len(shared) != len(items_a[task]) or len(shared) != len(items_b[task]):
            raise InjcError(f"benchmark {task!r}: the reports scored different items ({len(items_a[task])} and "
                            f"{len(items_b[task])}); run both with the same task and limit")
        result["benchmarks"][task] = paired([items_a[task][i] for i in shared], [items_b[task][i] for i in shared],
                                            margin_for(task))
    result["benchmarks_in_one_report_only"] = sorted(set(items_a) ^ set(items_b))
    return result


def training_curves(run: str | Path) -> dict[str, np.ndarray]:
    """A run folder's metrics.jsonl as arrays (step, loss, grad_norm where logged)."""
    path = Path(run) / "metrics.jsonl"
    try:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as error:
        raise InjcError(f"--runs {str(run)!r}: no metrics.jsonl to plot ({error.strerror or error})") from None
    keys = ("step", "loss", "grad_norm")
    return {key: np.array([line[key] for line in lines if key in line], float) for key in keys}


def table_row(name: str, result: dict) -> str:
    """One metric's row of the minimal-impact table: A, B, B − A with its interval, p, n and the verdict."""
    return "| " + " | ".join(map(str, [name, *_cells(result)])) + " |"


def _cells(result: dict) -> list:
    verdict = ("—" if "equivalent" not in result else
               f"{'yes' if result['equivalent'] else 'not shown'} (±{result['margin']:.4g}, "
               f"p = {result['equivalence_p_value']:.3g})")
    low, high = result["difference_ci95"]
    return [f"{result['a']:.4f}", f"{result['b']:.4f}", f"{result['difference']:+.4f} [{low:+.4f}, {high:+.4f}]",
            f"{result['p_value']:.3g}", result["n"], verdict]


def render(result: dict, plots: list[str]) -> str:
    """compare.md: the minimal-impact table."""
    lines = [f"# injc compare — A: {result['a']}, B: {result['b']}", "",
             "Paired differences B − A (held-out loss per never-trained row, benchmark accuracy per item), with a "
             "bootstrap 95% interval and a sign-flip p-value; equivalence by two one-sided paired t-tests at the "
             f"margin ({result['margin_source'] or 'none given: no verdict'}). Not shown equivalent is not shown "
             "different.", "",
             "| metric | A | B | B − A [95% CI] | p | n | equivalent |", "|---|---|---|---|---|---|---|"]
    rows = [("held-out loss", result["heldout_loss"])] + [(f"{t} acc", r) for t, r in result["benchmarks"].items()]
    lines += [table_row(name, r) for name, r in rows]
    if result["benchmarks_in_one_report_only"]:
        lines += ["", f"In one report only (not compared): {', '.join(result['benchmarks_in_one_report_only'])}."]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_plots(result: dict, out: Path, curves: dict[str, dict] | None) -> list[str]:
    """differences.png (each metric's difference with its interval and margin) and, with the two runs' curves
    (label → `training_curves`), training.png (loss and gradient-norm curves of both runs on one plot)."""
    from injc.evals.plots import _pyplot

    plt, written = _pyplot(), []
    rows = [("held-out loss", result["heldout_loss"])] + [(f"{t} acc", r) for t, r in result["benchmarks"].items()]
    figure, axis = plt.subplots(figsize=(7, 1 + 0.6 * len(rows)))
    for y, (name, r) in enumerate(rows):
        low, high = r["difference_ci95"]
        axis.errorbar(r["difference"], y, xerr=[[r["difference"] - low], [high - r["difference"]]], fmt="o", capsize=4)
        if "margin" in r:
            axis.plot([-r["margin"], r["margin"]], [y, y], "|", color="grey", markersize=14)
    axis.axvline(0, color="black", lw=0.6)
    axis.set_yticks(range(len(rows)), [name for name, _ in rows])
    axis.set_xlabel("B − A (95% interval; grey: equivalence margin)")
    figure.tight_layout()
    figure.savefig(out / "differences.png", dpi=120)
    plt.close(figure)
    written.append("differences.png")
    if curves:
        panels = [key for key in ("loss", "grad_norm") if all(len(c[key]) for c in curves.values())]
        figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        for axis, key in zip(axes[0], panels):
            for label, c in curves.items():
                axis.plot(c["step"][:len(c[key])], c[key], label=label, lw=0.8)
            axis.set_xlabel("step")
            axis.set_ylabel(key.replace("_", " "))
            axis.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(out / "training.png", dpi=120)
        plt.close(figure)
        written.append("training.png")
    return written


def compare(a: str | Path, b: str | Path, out: str | Path, seeds: list[str | Path] = (), margin: float | None = None,
            runs: tuple | None = None, force: bool = False, logger: str | None = None) -> dict:
    """Compare two reports and write compare.json, compare.md and plots to `out` (empty or absent; `force`
    replaces an earlier comparison there). With `logger`, the differences also go to that logger under out/logs/."""
    from injc.evals.report import check_report_folder, json_safe
    from injc.shards.files import written_whole
    from injc.train.tracking import close_logger, experiment_logger

    out = Path(out)
    check_report_folder(out, force, ("compare.json", "compare.md", "logs"), "injc compare")
    if margin is not None and not margin > 0:
        raise InjcError(f"--margin must be above 0, got {margin}")
    result = json_safe(compare_reports(read_report(a), read_report(b), [read_report(s) for s in seeds], margin,
                                       (str(a), str(b))))
    curves = {f"{label}: {Path(run).name}": training_curves(run) for label, run in zip("AB", runs)} if runs else None
    with written_whole(out) as partial:
        plots = write_plots(result, partial, curves)
        (partial / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
        (partial / "compare.md").write_text(render(result, plots))
        if logger is not None:
            tracker = experiment_logger(logger, partial)
            rows = {"heldout_loss": result["heldout_loss"], **result["benchmarks"]}
            tracker.log_metrics({f"compare/{name}/{key}": r[key] for name, r in rows.items()
                                 for key in ("difference", "p_value") if r[key] is not None}, step=0)
            close_logger(tracker)
    return result
