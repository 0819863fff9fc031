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
COMMON_KEYS = {"name", "kind", "items", "repetitions", "insertions", "tokens", "fraction_of_run", "placement", "files",
               "eval_records"}


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
        for e in self.experiments:
            placement = e["placement"]["mode"]
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
            bins = np.array_split(np.arange(len(density)), min(TEXT_BINS, len(density)))
            peak = max(density.max(), 1e-12)
            for steps in bins:
                value = density[steps].mean()
                bar = "█" * int(round(value / peak * BAR_WIDTH))
                lines.append(f"  steps {steps[0]:>7,}–{steps[-1]:<7,} {value:>9.4%} {bar}")
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

    def plot(self, path: str | Path) -> None:
        """Inserted share of each step's tokens, stacked by experiment, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        layout = self.manifest.layout
        steps = np.arange(layout.steps)
        figure, axis = plt.subplots(figsize=(10, 4), dpi=120)
        drawn = [e["name"] for e in self.experiments if self.step_tokens[e["name"]].any()]  # tokens, not directives
        shares = [self.step_tokens[name] / layout.tokens_per_step * 100 for name in drawn]
        if shares:
            axis.stackplot(steps, *shares, labels=drawn, step="post")
        for index, directive in enumerate(self.manifest.data.get("directives", [])):
            for position, step in enumerate(directive["steps"]):  # embedding noise writes no token: marked apart
                axis.axvline(step, color="black", ls=":", lw=0.8,
                             label=f"{directive['experiment']}: embedding noise" if position == 0 else None)
        if shares or self.manifest.data.get("directives"):
            axis.legend(loc="upper right", fontsize="small")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("inserted tokens (% of step)")
        axis.set_title(f"Insertion density per step — {self.manifest.root.name}")
        axis.set_xlim(0, max(layout.steps - 1, 1))
        axis.grid(alpha=0.3)
        figure.tight_layout()
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
