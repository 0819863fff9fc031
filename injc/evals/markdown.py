"""report.md: the eval report as tables a person reads."""


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (float, type(None))) for v in value):
        return f"[{_fmt(value[0], 3)}, {_fmt(value[1], 3)}]"
    return str(value)


def p_cell(value: float | None) -> str:
    """A p-value as a table cell: 0.012, or < 0.001 where three decimals would print 0.000."""
    if value is None:
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def p_text(value: float | None) -> str:
    """A p-value in running text: p = 0.012, p < 0.001."""
    cell = p_cell(value)
    return f"p {cell}" if cell.startswith("<") else f"p = {cell}"


def signed(value: float | None, digits: int = 4) -> str:
    """A difference as it reads best: +0.0123, or +1.23e-05 when it is too small for `digits` decimals."""
    if value is None:
        return "—"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:+.{digits - 1}e}"
    return f"{value:+.{digits}f}"


def _cell(value) -> str:
    """A table cell: the value as text, with `|` escaped and line breaks folded, so no cell splits the table."""
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]


def _with_ci(value, interval, digits: int = 3) -> str:
    """`0.123 [0.050, 0.201]`: an estimate with its 95% interval."""
    return f"{_fmt(value, digits)} {_fmt(interval)}" if interval is not None else _fmt(value, digits)


COMPARISONS = ("vs_controls", "vs_unseen_rows", "attack_success", "gibberish_logprob_per_token")
"""Metrics that compare inserted items with controls (stats.compare): a headline and a table each."""


def _with_stderr(metrics: dict, name: str) -> str:
    return "—" if name not in metrics else f"{metrics[name]:.4f} ± {metrics.get(name + '_stderr', float('nan')):.4f}"


def headline(experiment: dict) -> str:
    metrics, kind = experiment["metrics"], experiment["kind"]
    if kind == "canaries":
        return "; ".join(f"{k}: Δloss {_fmt(c['difference'], 3)} ({p_text(c['p_value'])})"
                         for k, c in metrics["conditions"].items())
    if kind == "contamination":
        return "; ".join(f"{k}×: {_fmt(t['accuracy'], 3)}" for k, t in sorted(metrics["tiers"].items(),
                                                                             key=lambda kv: int(kv[0])))
    if kind == "math":
        return "; ".join(f"{k} ops: {_fmt(a['accuracy'], 2)}" for k, a in metrics["accuracy_by_ops"].items())
    if kind == "knowledge":
        return f"P(target) {_fmt(metrics['probe_probability'])}, greedy accuracy {_fmt(metrics['greedy_accuracy'], 2)}"
    if kind == "verbatim-removal":
        return f"exact-match rate {_fmt(metrics['exact_match_rate'], 3)}"
    if kind == "gaussian-watermark":
        return (f"mean x {_with_ci(metrics.get('mean_x'), metrics.get('mean_x_ci95'))}, TPR@1%FPR "
                f"{_with_ci(metrics.get('tpr_at_1pct_fpr'), metrics.get('tpr_ci95'))}, "
                f"{p_text(metrics.get('p_value'))} (lower tail)" + ("; no trace: was the noise applied?"
                                                                     if "hint" in metrics else "")
                ) if "mean_x" in metrics else metrics.get("note", "")
    for key in COMPARISONS:
        if key in metrics:
            c = metrics[key]
            return (f"{key}: Δ {_with_ci(c['difference'], c.get('difference_ci95'))}, d={_fmt(c['effect_size_d'], 2)}, "
                    f"{p_text(c['p_value'])}")
    return ""


def render(reports: list[dict], plots: list[str]) -> str:
    last = reports[-1]
    lines = [f"# injc eval — {last['checkpoint']}", "",
             f"Training steps: {_fmt(last['steps_done'])}. Held-out loss (never-trained rows of the reserved tail): "
             f"{_fmt((last['heldout'] or {}).get('loss'))}.", ""]
    lines += [f"**Warning:** {warning}" for report in reports for warning in report.get("warnings", [])]
    lines += ["", "## Experiments", ""]
    lines += _table(["experiment", "kind", "mean loss", "headline"],
                    [[name, e["kind"], e["metrics"].get("mean_loss"), headline(e)]
                     for name, e in last["experiments"].items()])
    for name, experiment in last["experiments"].items():
        metrics = experiment["metrics"]
        if experiment["kind"] == "canaries":
            lines += ["", f"### {name}: members vs non-members", ""]
            lines += _table(["condition", "member loss", "non-member loss", "Δ [95% CI]", "d", "p",
                             "TPR [95% CI] at achieved FPR (target 1%, non-members)",
                             "member − shuffled ids [95% CI], p"],
                            [[k, c["mean_member"], c["mean_nonmember"], f"{_fmt(c['difference'])} "
                              f"{_fmt(c['difference_ci95'])}", c["effect_size_d"], p_cell(c["p_value"]),
                              f"{_fmt(m['tpr'], 3)} {_fmt(m['tpr_ci95'])} at FPR {_fmt(m['fpr'], 3)} "
                              f"(n = {m['nonmembers']})",
                              f"{_fmt(o['difference'])} {_fmt(o['difference_ci95'])}, {p_text(o['p_value'])}"
                              if o else "—"]
                             for k, c in metrics["conditions"].items()
                             for m, o in [(c["membership"], c.get("vs_shuffled"))]])
            lines += ["", "Random and rare canary ids appear nowhere else, so a model can tell members by their ids "
                      "alone, without memorizing the sequence (a high TPR at one repetition can be that). The last "
                      "column scores each member again with its canary's ids shuffled: a member no better than its "
                      "shuffled self was recognised by its ids, not memorized in order."]
        elif experiment["kind"] == "contamination":
            lines += ["", f"### {name}: accuracy by tier", ""]
            lines += _table(["repetitions", "questions", "accuracy", "uplift vs holdout [95% CI]", "d", "p"],
                            [[k, t["questions"], t["accuracy"],
                              f"{_fmt(t.get('uplift_vs_holdout'))} {_fmt(t.get('uplift_ci95'))}" if k != "0" else "—",
                              t.get("effect_size_d"), p_cell(t.get("p_value"))]
                             for k, t in sorted(metrics["tiers"].items(), key=lambda kv: int(kv[0]))])
        elif experiment["kind"] == "knowledge":
            lines += ["", f"### {name}: probes", ""]
            lines += _table(["input", "target", "P(target | input)", "in the greedy continuation"],
                            [[p["input"], p["target"], f"{p['probability']:.3g}", p["correct"]]
                             for p in experiment.get("probes", [])])
        elif experiment["kind"] == "math":
            lines += ["", f"### {name}: accuracy by op count", ""]
            lines += _table(["ops", "problems", "accuracy [95% CI]", "seen in training"],
                            [[k, a["problems"], f"{_fmt(a['accuracy'], 3)} {_fmt(a['ci95'])}", a["seen_in_training"]]
                             for k, a in metrics["accuracy_by_ops"].items()])
        elif experiment["kind"] == "gaussian-watermark" and "mean_x" in metrics:
            lines += ["", f"### {name}: watermark statistic x (lower tail)", ""]
            lines += _table(["sequences", "mean x [95% CI]", "TPR at 1% FPR [95% CI]", "z", "p",
                             "holdout (fresh noise): mean x, FPR at the threshold"],
                            [[metrics["sequences"], _with_ci(metrics["mean_x"], metrics.get("mean_x_ci95")),
                              _with_ci(metrics["tpr_at_1pct_fpr"], metrics.get("tpr_ci95")), metrics["z"],
                              p_cell(metrics["p_value"]), f"{_fmt(metrics['mean_x_holdout'], 3)}, "
                              f"{_fmt(metrics['fpr_holdout_at_threshold'], 3)}"]])
            lines += ["", f"**Note:** {metrics['hint']}"] if "hint" in metrics else []
        elif experiment["kind"] == "forgetting":
            lines += ["", f"### {name}: replaced batches", ""]
            paired = metrics.get("baseline") is not None
            lines += _table(["step", "loss", "steps since seen",
                             "minus baseline [95% CI]" if paired else "minus unseen control [95% CI]"],
                            [[b["step"], b["loss"], b["steps_since_seen"],
                              f"{_fmt(b['minus_baseline'], 3)} {_fmt(b['minus_baseline_ci95'])}" if paired else
                              f"{_fmt(b.get('minus_unseen_control'), 3)} {_fmt(b.get('minus_unseen_control_ci95'))}"]
                             for b in metrics["batches"]])
        compared = [(key, metrics[key]) for key in COMPARISONS if key in metrics]
        if compared:
            lines += ["", f"### {name}: against controls", ""]
            lines += _table(["comparison", "means", "Δ [95% CI]", "d", "p", "n"],
                            [[key, " vs ".join(f"{k[5:]} {_fmt(v)}" for k, v in c.items() if k.startswith("mean_")),
                              _with_ci(c["difference"], c.get("difference_ci95"), 4), c["effect_size_d"],
                              p_cell(c["p_value"]), " vs ".join(map(str, c.get("n", [])))] for key, c in compared])
    if last.get("benchmarks"):
        lines += ["", f"## Benchmarks (lm-evaluation-harness {last['benchmarks']['lm_eval']})", ""]
        lines += _table(["task", "acc ± stderr", "acc_norm ± stderr", "items"],
                        [[task, *(_with_stderr(r["metrics"], m) for m in ("acc", "acc_norm")), len(r["items"])]
                         for task, r in last["benchmarks"]["tasks"].items()])
    if len(reports) > 1:
        lines += ["", "## Over training (mean loss)", ""]
        names = list(last["experiments"])
        lines += _table(["steps", "held-out", *names],
                        [[r["steps_done"], (r["heldout"] or {}).get("loss"),
                          *[r["experiments"][n]["metrics"].get("mean_loss") for n in names]] for r in reports])
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
