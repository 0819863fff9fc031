"""`injc compare`: paired differences of two eval reports, each recomputed here (bootstrap and exact sign-flip
written out, the equivalence test against scipy's one-sided t-tests), on constructed reports."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from injc.cli import main
from injc.evals.compare import compare, compare_reports, tost_pvalue
from tests.evals.independent import bootstrap_mean, exact_sign_flip


def scipy_tost(differences, margin):
    lower = scipy_stats.ttest_1samp(differences, -margin, alternative="greater").pvalue
    upper = scipy_stats.ttest_1samp(differences, margin, alternative="less").pvalue
    return max(lower, upper)


def report(rows, benchmarks=None, checkpoint="run/final"):
    rows = np.asarray(rows, float)
    result = {"checkpoint": checkpoint, "steps_done": 10, "experiments": {},
              "heldout": {"loss": float(rows.mean()), "rows": len(rows), "row_losses": rows.tolist()}}
    if benchmarks is not None:
        result["benchmarks"] = {"lm_eval": "0.4.13", "tasks": {
            task: {"metrics": {"acc": float(np.mean([a for _, a in items]))},
                   "items": [{"doc_id": d, "acc": a, "acc_norm": a, "loglikelihoods": [0.0]} for d, a in items]}
            for task, items in benchmarks.items()}}
    return result


RNG = np.random.default_rng(4)
ROWS_A = RNG.normal(2.6, 0.3, 12)
ROWS_B = ROWS_A + RNG.normal(0.004, 0.01, 12)
ACC_A = [(d, float(a)) for d, a in enumerate(RNG.random(14) < 0.55)]
ACC_B = [(d, float(a if d % 5 else 1 - a)) for d, a in ACC_A]


@pytest.mark.parametrize("margin", [0.005, 0.02, 0.1])
def test_tost_is_two_one_sided_t_tests(margin):
    differences = ROWS_B - ROWS_A
    assert tost_pvalue(differences, margin) == pytest.approx(scipy_tost(differences, margin), rel=1e-9)


def test_heldout_rows_and_benchmark_items_are_compared_pair_by_pair():
    shuffled = {"tiny": list(reversed(ACC_B))}  # items are paired by doc_id, not by position
    result = compare_reports(report(ROWS_A, {"tiny": ACC_A}), report(ROWS_B, shuffled, "clean/final"), margin=0.02)
    loss = result["heldout_loss"]
    differences = ROWS_B - ROWS_A
    assert (loss["a"], loss["b"]) == (pytest.approx(ROWS_A.mean()), pytest.approx(ROWS_B.mean()))
    assert loss["difference"] == pytest.approx(differences.mean())
    assert loss["difference_ci95"] == pytest.approx(bootstrap_mean(differences))
    assert loss["p_value"] == pytest.approx(exact_sign_flip(differences)) and loss["p_method"] == "exact"
    assert loss["equivalence_p_value"] == pytest.approx(scipy_tost(differences, 0.02))
    assert loss["equivalent"] == (scipy_tost(differences, 0.02) < 0.05) and loss["n"] == 12
    acc = result["benchmarks"]["tiny"]
    paired = np.array([b - a for (_, a), (_, b) in zip(ACC_A, ACC_B)])
    assert acc["difference"] == pytest.approx(paired.mean()) and acc["n"] == 14
    assert acc["difference_ci95"] == pytest.approx(bootstrap_mean(paired))
    assert acc["p_value"] == pytest.approx(exact_sign_flip(paired))
    assert acc["equivalence_p_value"] == pytest.approx(scipy_tost(paired, 0.02))
    assert (result["a"], result["b"], result["margin_source"]) == ("run/final", "clean/final", "given")


def test_the_seed_spread_is_each_metrics_margin_without_a_given_one():
    seeds = [report(ROWS_A + 0.03, {"tiny": [(d, 1.0) for d, _ in ACC_A]}),
             report(ROWS_A - 0.05, {"tiny": [(d, 0.0) for d, _ in ACC_A]})]
    result = compare_reports(report(ROWS_A, {"tiny": ACC_A}), report(ROWS_B, {"tiny": ACC_B}), seeds)
    mean_a = np.mean([a for _, a in ACC_A])
    assert result["seed_spread"]["heldout_loss"] == pytest.approx(0.05)
    assert result["seed_spread"]["tiny"] == pytest.approx(max(1 - mean_a, mean_a))
    assert result["heldout_loss"]["margin"] == pytest.approx(0.05)
    assert result["heldout_loss"]["equivalence_p_value"] == pytest.approx(scipy_tost(ROWS_B - ROWS_A, 0.05))
    assert result["benchmarks"]["tiny"]["margin"] == pytest.approx(max(1 - mean_a, mean_a))
    assert (result["margin_source"], result["clean_seeds"]) == ("seed spread", 2)
    assert "margin" not in compare_reports(report(ROWS_A), report(ROWS_B))["heldout_loss"]


def test_injc_compare_writes_the_table_plots_and_curves(tmp_path):
    for name, rows, acc in (("a", ROWS_A, ACC_A), ("b", ROWS_B, ACC_B)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report(rows, {"tiny": acc}, f"{name}/final")))
        (tmp_path / f"run-{name}").mkdir()
        (tmp_path / f"run-{name}" / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 3 - s / 10, "lr": 1e-3, "grad_norm": 1 + s}) + "\n" for s in range(5)))
    out = tmp_path / "compare"
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b" / "report.json"),
                                       "--out", str(out), "--margin", "0.02", "--runs", str(tmp_path / "run-a"),
                                       str(tmp_path / "run-b")])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "compare.json").read_text())
    assert written["heldout_loss"]["difference"] == pytest.approx((ROWS_B - ROWS_A).mean())
    assert {p.name for p in out.iterdir()} == {"compare.json", "compare.md", "differences.png", "training.png"}
    table = (out / "compare.md").read_text()
    assert "| held-out loss |" in table and "| tiny acc |" in table
    assert f"held-out loss: B − A {(ROWS_B - ROWS_A).mean():+.4f}" in result.output
    again = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    assert again.exit_code == 2 and "not empty; add --force" in again.output
    forced = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out),
                                       "--force"])
    assert forced.exit_code == 0 and not (out / "training.png").exists()


@pytest.mark.parametrize("b, extra, message", [
    (report(ROWS_B[:10]), [], "the reports scored different held-out rows (12 and 10)"),
    ({"checkpoint": "x", "experiments": {}, "heldout": None}, [], "has no held-out loss"),
    (report(ROWS_B, {"tiny": ACC_B[:9]}), [], "benchmark 'tiny': the reports scored different items (14 and 9)"),
    ("not json", [], "is not JSON"),
    ({"something": 1}, [], "is not an injc eval report"),
    (report(ROWS_B), ["--margin", "0"], "--margin must be above 0, got 0.0"),
    (report(ROWS_B), ["--runs", "RUN", "RUN"], "no metrics.jsonl to plot"),
])
def test_bad_comparisons_are_one_line_and_write_nothing(tmp_path, b, extra, message):
    (tmp_path / "a.json").write_text(json.dumps(report(ROWS_A, {"tiny": ACC_A})))
    (tmp_path / "b.json").write_text(b if isinstance(b, str) else json.dumps(b))
    (tmp_path / "run").mkdir()
    extra = [str(tmp_path / "run") if e == "RUN" else e for e in extra]
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out",
                                       str(tmp_path / "out"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(Exception, match="cannot be read"):
        compare(tmp_path / "missing.json", tmp_path / "b.json", tmp_path / "out")
