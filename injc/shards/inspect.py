"""`injc inspect manifest.json`: what was injected where, per experiment and per step, for audits.

Reads only the manifest and the small columns of the insertions table (never the token lists), so it stays
fast on tables of millions of rows.
"""

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from injc.shards.insertions import read_columns
from injc.shards.manifest import Manifest, load_manifest

BAR_WIDTH = 40
TEXT_WIDTH = 100
TEXT_BINS = 20
PLOT_BINS = 400
"""At most this many runs of steps in the plot (about one per 2.5 pixels of its width)."""
COMMON_KEYS = {"name", "kind", "items", "repetitions", "insertions", "tokens", "fraction_of_run", "placement", "files",
               "eval_records"}


def step_bins(steps: int, bins: int) -> np.ndarray:
    """Edges of at most `bins` runs of consecutive steps covering [0, steps) (the first `steps % bins` runs one
    step longer, as np.array_split cuts): what the text view and the plot average over."""
    count = max(1, min(bins, steps))
    sizes = np.full(count, steps // count) + (np.arange(count) < steps % count)
    return np.r_[0, np.cumsum(sizes)].astype(np.int64)


def bin_means(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of per-step `values` over each run of steps between `edges`."""
    return np.add.reduceat(np.asarray(values, float), edges[:-1]) / np.diff(edges)


def _describe(value) -> str:
    if isinstance(value, dict):
        keys = sorted(value, key=int) if all(k.lstrip("-").isdigit() for k in value) else list(value)  # tiers
        return "{" + ", ".join(f"{k}: {_describe(value[k])}" for k in keys) + "}"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "; ".join(_describe(v) for v in value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class Report:
    manifest: Manifest
    experiments: list[dict]
    step_tokens: dict[str, np.ndarray]
    """Inserted tokens per step, per experiment."""

    @property
    def density(self) -> np.ndarray:
        """Fraction of each step's tokens that are inserted (all experiments)."""
        total = sum(self.step_tokens.values(), np.zeros(self.manifest.layout.steps))
        return total / self.manifest.layout.tokens_per_step

    def to_json(self) -> dict:
        density = self.density
        return {
            "manifest": str(self.manifest.root / "manifest.json"),
            "variant": self.manifest.variant,
            "layout": self.manifest.data["layout"],
            "experiments": self.experiments,
            "totals": {
                "insertions": sum(e["insertions"] for e in self.experiments),
                "tokens": sum(e["tokens"] for e in self.experiments),
                "fraction_of_run": sum(e["fraction_of_run"] for e in self.experiments),
            },
            "density": {
                "per_step": [round(float(d), 8) for d in density],
                "max": float(density.max()) if len(density) else 0.0,
                "mean": float(density.mean()) if len(density) else 0.0,
            },
        }

    def to_text(self) -> str:
        layout = self.manifest.data["layout"]
        lines = [
            f"{self.manifest.root / 'manifest.json'} ({self.manifest.variant}): {layout['steps']:,} steps × "
            f"{layout['batch_size']:,} rows × {layout['seq_len']:,} tokens = {layout['total_tokens']:,} tokens "
            f"({layout['dtype']}, eos {layout['eos_id']})",
            *([f"staged build: steps [0, {self.manifest.until_step:,}) written; grow it with injc build --until-step"]
              if self.manifest.until_step < layout["steps"] else []),
            "",
            f"{'experiment':<20} {'kind':<18} {'placement':<16} {'items':>8} {'copies':>10} {'tokens':>13} "
            f"{'of run':>9}",
        ]
        noised = {d["experiment"] for d in self.manifest.data.get("directives", [])}
        for e in self.experiments:
            placement = "embedding noise" if e["name"] in noised else e["placement"]["mode"]  # writes no token
            if placement == "range":
                placement += f" [{e['placement']['start_step']},{e['placement']['end_step']})"
            lines.append(f"{e['name'][:20]:<20} {e['kind'][:18]:<18} {placement[:16]:<16} {e['items']:>8,} "
                         f"{e['insertions']:>10,} {e['tokens']:>13,} {e['fraction_of_run']:>9.4%}")
        totals = self.to_json()["totals"]
        lines.append(f"{'total':<65} {totals['insertions']:>10,} {totals['tokens']:>13,} "
                     f"{totals['fraction_of_run']:>9.4%}")
        details = [(e["name"], {k: v for k, v in e.items() if k not in COMMON_KEYS}) for e in self.experiments]
        details = [(name, extra) for name, extra in details if extra]
        if details:
            lines += ["", "experiment details (tiers: repetitions → questions; conditions; windows):"]
            lines += [f"  {name}: " + "; ".join(f"{k} {_describe(v)}" for k, v in sorted(extra.items()))
                      for name, extra in details]
        density = self.density
        if len(density):
            lines += ["", f"inserted share of each step's tokens (mean {density.mean():.4%}, max {density.max():.4%}):"]
            edges = step_bins(len(density), TEXT_BINS)
            peak = max(density.max(), 1e-12)
            for first, end, value in zip(edges[:-1], edges[1:], bin_means(density, edges)):
                bar = "█" * int(round(value / peak * BAR_WIDTH))
                lines.append(f"  steps {first:>7,}–{end - 1:<7,} {value:>9.4%} {bar}")
        return "\n".join(lines)

    def step_table(self, step: int, text: bool = False) -> str:
        """Every insertion in one step, in offset order; `text` adds each payload decoded by the build's
        tokenizer (one line, cut at TEXT_WIDTH characters)."""
        layout = self.manifest.layout
        columns = ["experiment", "item", "repetition", "offset", "length", "row", "col"] + (["tokens"] if text else [])
        table = pq.read_table(self.manifest.insertions_path, columns=columns, filters=[("step", "=", step)])
        lines = [f"step {step}: {table.num_rows} insertions "
                 f"(tokens [{step * layout.tokens_per_step:,}, {(step + 1) * layout.tokens_per_step:,}))",
                 f"{'experiment':<24} {'item':>8} {'rep':>5} {'row':>6} {'col':>7} {'length':>7} {'offset':>14}"]
        for r in table.to_pylist():
            lines.append(f"{r['experiment'][:24]:<24} {r['item']:>8} {r['repetition']:>5} {r['row']:>6} "
                         f"{r['col']:>7} {r['length']:>7} {r['offset']:>14,}")
            if text:
                lines.append(f"    {self._decode(r['tokens'])}")
        return "\n".join(lines)

    @cached_property
    def _tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.manifest.root / self.manifest.data["tokenizer"]["path"]))

    def _decode(self, tokens: list[int]) -> str:
        decoded = self._tokenizer.decode(tokens, skip_special_tokens=False)
        shown = json.dumps(decoded, ensure_ascii=False)
        return shown if len(shown) <= TEXT_WIDTH else shown[:TEXT_WIDTH - 1] + "…"

    def figure(self):
        """Inserted share of each step's tokens, stacked by experiment, averaged over at most PLOT_BINS runs of
        steps (a run of 10^5 steps stays a few hundred artists); embedding-noise steps as the share of each run's
        steps noised, in a band below. Returns the matplotlib Figure."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        layout = self.manifest.layout
        edges = step_bins(layout.steps, PLOT_BINS)
        directives = self.manifest.data.get("directives", [])
        figure, axes = plt.subplots(2 if directives else 1, 1, figsize=(11, 4.6 if directives else 4), dpi=120,
                                    sharex=True, squeeze=False, layout="constrained",
                                    gridspec_kw={"height_ratios": [5, 1] if directives else [1]})
        axis = axes[0, 0]
        drawn = [e["name"] for e in self.experiments if self.step_tokens[e["name"]].any()]  # tokens, not directives
        shares = [bin_means(self.step_tokens[name], edges) / layout.tokens_per_step * 100 for name in drawn]
        if shares:  # each run's mean drawn over the whole run (the last value repeated to close it)
            axis.stackplot(edges, *[np.r_[share, share[-1]] for share in shares], labels=drawn, step="post")
        axis.set_ylabel("inserted tokens (% of step)")
        axis.grid(alpha=0.3)
        if directives:
            band, peak = axes[1, 0], 0.0
            for directive in directives:  # embedding noise writes no token: its steps are marked apart
                run = np.searchsorted(edges, np.asarray(directive["steps"], dtype=np.int64), side="right") - 1
                noised = np.bincount(run, minlength=len(edges) - 1) / np.diff(edges) * 100
                band.stairs(noised, edges, fill=True, alpha=0.6, label=f"{directive['experiment']}: embedding noise")
                peak = max(peak, float(noised.max(initial=0)))
            band.set_ylabel("noised\n(% of steps)")
            band.set_ylim(0, max(peak, 1.0) * 1.2)
        axes[-1, 0].set_xlabel("optimizer step")
        axes[-1, 0].set_xlim(0, max(layout.steps, 1))
        axes[-1, 0].xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        width = int(edges[1] - edges[0]) if len(edges) > 1 else 1
        plan = self.manifest.data.get("plan", {}).get("path") or self.manifest.root.name
        axis.set_title(f"Insertion density — {plan} ({layout.steps:,} steps"
                       + (f", mean over runs of {width:,} steps)" if width > 1 else ")"))
        if shares or directives:
            figure.legend(loc="outside right upper", fontsize="small")
        return figure

    def plot(self, path: str | Path) -> None:
        """`figure()` as a PNG."""
        import matplotlib.pyplot as plt

        figure = self.figure()
        figure.savefig(path)
        plt.close(figure)


def inspect(manifest_path: str | Path) -> Report:
    manifest = load_manifest(manifest_path)
    table = read_columns(manifest.insertions_path, ["experiment", "step", "length"])
    names, step, length = table["experiment"], table["step"], table["length"]
    steps = manifest.layout.steps
    step_tokens = {}
    for entry in manifest.experiments:
        mine = names == entry["name"]
        step_tokens[entry["name"]] = np.bincount(step[mine], weights=length[mine], minlength=steps)
    return Report(manifest, manifest.experiments, step_tokens)
