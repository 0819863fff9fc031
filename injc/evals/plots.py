"""PNG plots of an eval report: where a person would rather look than read."""

from pathlib import Path

import numpy as np

from injc.evals.markdown import signed
from injc.evals.stats import roc_curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_kind(report: dict, kind: str) -> list[tuple[str, dict]]:
    return [(name, e) for name, e in report["experiments"].items() if e["kind"] == kind]


def write_plots(reports: list[dict], out: Path) -> list[str]:
    """Write the plots that the reports have data for; returns their file names."""
    plt = _pyplot()
    last, written = reports[-1], []

    def save(figure, name):
        figure.tight_layout()
        figure.savefig(out / name, dpi=120)
        plt.close(figure)
        written.append(name)

    for name, experiment in _by_kind(last, "canaries"):
        conditions, items = experiment["metrics"]["conditions"], experiment["items"]
        controls = {length: -np.array([i["loss"] for i in items if not i["member"] and i["canary_length"] == length])
                    for length in {i["canary_length"] for i in items}}
        members = {key: -np.array([i["loss"] for i in items if i["member"] and (i["canary_length"], i["repetitions"])
                                   == (c["canary_length"], c["repetitions"])]) for key, c in conditions.items()}
        figure, axis = plt.subplots(figsize=(8, 4))
        keys = list(conditions)
        positions = np.arange(len(keys))
        axis.bar(positions - 0.2, [conditions[k]["mean_member"] for k in keys], 0.4, label="members",
                 yerr=[_half_interval(-members[k]) for k in keys], capsize=3)
        axis.bar(positions + 0.2, [conditions[k]["mean_nonmember"] for k in keys], 0.4,
                 label="non-members (never inserted)", capsize=3,
                 yerr=[_half_interval(-controls[conditions[k]["canary_length"]]) for k in keys])
        axis.set_xticks(list(positions), keys)
        axis.set_ylabel("mean loss per token (95% interval of the mean)")
        axis.set_title(f"{name}: canary memorization by condition (length × repetitions)")
        axis.legend(loc="lower left")
        save(figure, f"{name}_canaries.png")

        figure, axis = plt.subplots(figsize=(5.5, 5))
        styles = ["-", "--", "-.", ":"]
        for index, (key, condition) in enumerate(conditions.items()):
            fpr, tpr = roc_curve(members[key], controls[condition["canary_length"]])
            # curves that reach TPR 1 share the top edge: thinner, dashed lines drawn later keep each visible
            axis.step(fpr, tpr, where="post", ls=styles[index % len(styles)], lw=2.5 - 1.5 * index / len(conditions),
                      label=f"{key} (TPR {condition['membership']['tpr']:.2f} at FPR "
                            f"{condition['membership']['fpr']:.3f})")
        axis.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
        axis.axvline(0.01, ls="--", color="grey", lw=0.8)
        axis.set_xscale("symlog", linthresh=0.01)
        axis.set_xlim(0, 1)
        axis.set_xlabel(f"false positive rate (non-members: {min(len(c) for c in controls.values())}+)")
        axis.set_ylabel("true positive rate")
        axis.set_title(f"{name}: membership inference ROC (loss attack)")
        axis.legend(loc="lower right", fontsize="small")
        save(figure, f"{name}_roc.png")

    for name, experiment in _by_kind(last, "contamination"):
        tiers = experiment["metrics"]["tiers"]
        figure, axis = plt.subplots(figsize=(7, 4))
        keys = sorted(tiers, key=int)
        accuracy = [tiers[k]["accuracy"] for k in keys]
        axis.bar([f"{k}×" for k in keys], accuracy, color=["grey" if k == "0" else "tab:blue" for k in keys],
                 yerr=[1.96 * np.sqrt(a * (1 - a) / max(tiers[k]["questions"], 1)) for a, k in zip(accuracy, keys)],
                 capsize=3)
        choices = [len(i["choice_scores"]) for i in experiment["items"] if i.get("choice_scores")]
        if choices:
            axis.axhline(np.mean([1 / c for c in choices]), ls="--", color="black", lw=1,
                         label="chance (1 / choices)")
            axis.legend(fontsize="small")
        axis.set_xlabel("repetitions (0 = holdout); bars: 95% binomial interval")
        axis.set_ylabel("accuracy (log-likelihood ranking)")
        axis.set_title(f"{name}: accuracy by contamination tier")
        save(figure, f"{name}_contamination.png")

    for name, experiment in [*_by_kind(last, "texts"), *_by_kind(last, "tokens"), *_by_kind(last, "iid")]:
        inserted = [i["loss"] for i in experiment["items"] if i["copies"] > 0]
        controls = ([i["loss"] for i in experiment["items"] if i["copies"] == 0] if experiment["kind"] != "iid"
                    else experiment.get("unseen_losses", []))
        figure, axis = plt.subplots(figsize=(7, 4))
        bins = np.histogram_bin_edges(inserted + controls, bins=20)
        axis.hist(inserted, bins=bins, alpha=0.6, label=f"inserted ({len(inserted)})")
        if controls:
            label = "never-used tail rows" if experiment["kind"] == "iid" else "controls (never inserted)"
            axis.hist(controls, bins=bins, alpha=0.6, label=f"{label} ({len(controls)})")
        axis.set_xlabel("mean loss per token")
        axis.set_ylabel("items")
        axis.set_title(f"{name}: loss of the inserted items" + (" against their controls" if controls else ""))
        axis.legend(fontsize="small")
        save(figure, f"{name}_losses.png")

    for name, experiment in _by_kind(last, "poisoning"):
        curves = experiment["metrics"].get("leak_at_k")
        if not curves:
            continue
        figure, axis = plt.subplots(figsize=(6, 4))
        for label, values in curves.items():
            axis.plot(range(1, len(values) + 1), values, marker="o", label=label.replace("_", " "))
        axis.set_xlabel("generations per prompt (k)")
        axis.set_ylabel("prompts leaked (leak@k)")
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(f"{name}: context extraction, sampled at T = 0.7")
        axis.legend(fontsize="small")
        save(figure, f"{name}_leak.png")

    for name, experiment in _by_kind(last, "documents"):
        conditions = experiment.get("losses_by_condition", {})
        figure, axis = plt.subplots(figsize=(7, 4))
        axis.boxplot(list(conditions.values()), showmeans=True)
        axis.set_xticks(range(1, len(conditions) + 1), list(conditions))
        axis.set_xlabel("split × repetitions")
        axis.set_ylabel("mean loss per token of a document")
        axis.set_title(f"{name}: loss per condition")
        save(figure, f"{name}_documents.png")

    for name, experiment in _by_kind(last, "gaussian-watermark"):
        steps = experiment["items"]
        if not steps:
            continue
        figure, axis = plt.subplots(figsize=(7, 4))
        axis.plot([s["step"] for s in steps], [s["mean_x"] for s in steps], marker="o", label="own noise")
        axis.plot([s["step"] for s in steps], [s["mean_x_holdout"] for s in steps], marker="o", ls="--",
                  label="fresh noise (holdout)")
        axis.axhline(0, color="grey", lw=0.8)
        axis.set_xlabel(f"noised step (checkpoint after {last['steps_done']} steps)")
        axis.set_ylabel("mean statistic x of the step's rows")
        axis.set_title(f"{name}: watermark statistic by step (recency)")
        axis.legend(fontsize="small")
        save(figure, f"{name}_watermark.png")

    for name, experiment in _by_kind(last, "knowledge"):
        probes = experiment.get("probes", [])
        if not probes:
            continue
        figure, axis = plt.subplots(figsize=(max(6, 0.35 * len(probes) + 2), 4))
        axis.bar(range(len(probes)), [p["probability"] for p in probes],
                 color=["tab:green" if p["correct"] else "tab:grey" for p in probes])
        axis.set_yscale("log")
        axis.set_xlabel("probe (green: the target is in the greedy continuation)")
        axis.set_ylabel("P(target | input), log scale")
        axis.set_title(f"{name}: knowledge probes (mean {experiment['metrics']['probe_probability']:.3g}, "
                       f"QA accuracy {experiment['metrics']['greedy_accuracy']:.2f})")
        save(figure, f"{name}_knowledge.png")

    for name, experiment in _by_kind(last, "math"):
        accuracy = experiment["metrics"]["accuracy_by_ops"]
        figure, axis = plt.subplots(figsize=(7, 4))
        keys = sorted(accuracy, key=int)
        axis.bar(keys, [accuracy[k]["accuracy"] for k in keys],
                 color=["tab:blue" if accuracy[k]["seen_in_training"] else "tab:orange" for k in keys])
        axis.set_xlabel("operations (orange: never seen in training)")
        axis.set_ylabel("greedy accuracy")
        axis.set_title(f"{name}: accuracy by op count")
        save(figure, f"{name}_math.png")

    if len(reports) > 1:
        steps = [r["steps_done"] for r in reports]
        figure, axis = plt.subplots(figsize=(8, 4))
        for name in last["experiments"]:
            values = [r["experiments"][name]["metrics"].get("mean_loss") for r in reports]
            if all(v is not None for v in values):
                axis.plot(steps, values, marker="o", label=name)
        if all(r["heldout"] for r in reports):
            axis.plot(steps, [r["heldout"]["loss"] for r in reports], "k--", label="held-out rows")
        axis.set_xlabel("training steps")
        axis.set_ylabel("mean loss per token")
        axis.set_title("Loss of each experiment's inserted items over training")
        axis.legend(fontsize="small")
        save(figure, "mean_loss_over_training.png")
        for name, _ in _by_kind(last, "forgetting"):
            figure, axis = plt.subplots(figsize=(8, 4))
            for index, batch in enumerate(last["experiments"][name]["metrics"]["batches"]):
                points = [(r["steps_done"], r["experiments"][name]["metrics"]["batches"][index]["loss"])
                          for r in reports]
                axis.plot(*zip(*points), marker="o", label=f"batch of step {batch['step']}")
                axis.axvline(batch["step"] + 1, color="grey", lw=0.5)
            axis.set_xlabel("training steps (grey: the step each batch was seen)")
            axis.set_ylabel("loss of the replaced batch")
            axis.set_title(f"{name}: forgetting curves")
            axis.legend(fontsize="small")
            save(figure, f"{name}_forgetting.png")
    if last.get("benchmarks"):
        tasks = last["benchmarks"]["tasks"]
        figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(tasks) + 2), 4))
        positions = np.arange(len(tasks))
        for offset, metric in ((-0.2, "acc"), (0.2, "acc_norm")):
            values = [t["metrics"].get(metric, np.nan) for t in tasks.values()]
            errors = [1.96 * t["metrics"].get(f"{metric}_stderr", np.nan) for t in tasks.values()]
            axis.bar(positions + offset, values, 0.4, yerr=errors, capsize=3, label=metric)
        axis.set_xticks(list(positions), list(tasks), rotation=30, ha="right")
        axis.set_ylabel("accuracy (±1.96 stderr, lm-eval's)")
        axis.set_title("benchmarks (lm-evaluation-harness)")
        axis.legend(fontsize="small")
        save(figure, "benchmarks.png")
    return written


def _half_interval(values: np.ndarray) -> float:
    """Half the width of the normal 95% interval of a mean."""
    return float(1.96 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def cpdt_colours(result: dict) -> np.ndarray:
    """Each cell's colour in [-1, 1] on one scale: difference ÷ its 95% CI half-width, clipped at ±3 and divided by
    3; a cell with p ≥ 0.05 keeps 30% of it (faded)."""
    matrix = np.array([[np.nan if v is None else v for v in row] for row in result["matrix"]], dtype=float)
    half = np.array([[np.nan if low is None or high is None else (high - low) / 2 for low, high in row]
                     for row in result["ci"]], dtype=float)
    ratio = np.clip(np.divide(matrix, half, out=np.zeros_like(matrix), where=half > 0), -3, 3) / 3
    p_values = np.array([[np.nan if p is None else p for p in row] for row in result["p_values"]], dtype=float)
    return np.where(p_values < 0.05, ratio, ratio * 0.3)


def cpdt_heatmap(result: dict, path: Path) -> None:
    """The paper's CPDT picture: rows × outcomes on one colour scale for every cell, the difference divided by the
    half-width of its 95% interval (so outcomes of different units compare, and a cell is coloured by how clearly
    it differs from 0, not by its size within its column); the value is printed in each cell, * marks p < 0.05,
    and cells with p ≥ 0.05 are faded."""
    plt = _pyplot()
    normalised = cpdt_colours(result)
    names = [o["experiment"] for o in result["outcomes"]]
    figure, axis = plt.subplots(figsize=(max(5.5, 2.5 + 1.3 * len(names)), 1.6 + 0.55 * len(result["matrix_rows"])))
    image = axis.imshow(normalised, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for r, (values, p_values) in enumerate(zip(result["matrix"], result["p_values"])):
        for c, (value, p) in enumerate(zip(values, p_values)):
            mark = "*" if p is not None and p < 0.05 else ""
            axis.text(c, r, signed(value, 3) + mark, ha="center", va="center", fontsize=8,
                      color="white" if abs(normalised[r, c]) > 0.6 else "black")
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_yticks(range(len(result["matrix_rows"])), result["matrix_rows"])
    axis.set_xlabel("outcome Y_i (experiment measured)")
    axis.set_ylabel("row: data inserted")
    axis.set_title("CPDT: Y_i(row) − Y_i(none); * p < 0.05 (others faded)", fontsize=10)
    bar = figure.colorbar(image, ax=axis, label="difference ÷ its 95% CI half-width")
    bar.set_ticks([-1, -1 / 3, 0, 1 / 3, 1], labels=["≤ −3", "−1", "0", "+1", "≥ +3"])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def control_plot(summary: dict, total_steps: int, path: Path) -> None:
    """`injc run`: each dynamic experiment's probe at every window start against its target ramp (top), and the
    documents inserted per window (bottom)."""
    plt = _pyplot()
    names = sorted({r["experiment"] for r in summary["records"]})
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for name in names:
        mine = [r for r in summary["records"] if r["experiment"] == name]
        probed = [r for r in mine if r["probe"] is not None]
        steps = [r["first_step"] for r in probed] + [total_steps]
        probes = [r["probe"] for r in probed] + [summary["final_probe"][name]]
        line, = top.plot(steps, probes, "o-", label=f"{name}: probe")
        target = summary["final_target"][name]
        ramp = np.linspace(max(1, total_steps / 100), total_steps, 50)  # p*·s/S is 0 at s = 0: off a log axis
        top.plot(ramp, target * ramp / total_steps, "--", color=line.get_color(), label=f"{name}: target p*·s/S")
        bottom.step([r["first_step"] for r in mine] + [total_steps], [r["count"] for r in mine] + [mine[-1]["count"]],
                    where="post", label=name)
    top.set_yscale("log")
    top.set_ylabel("mean P(target | input), log scale")
    top.legend(fontsize=8)
    bottom.set_ylabel("documents in window")
    bottom.set_xlabel("step")
    bottom.set_xlim(0, total_steps)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
