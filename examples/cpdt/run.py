"""The paper's dependence test (CPDT) at toy scale, end to end on 2 CPU cores (about 10 minutes):

    python examples/cpdt/run.py [--out runs/cpdt] [--seeds 3]

1. pretrain the tiny LitGPT model `examples/demo/tiny-gpt.yaml` on the demo build (200 steps): the checkpoint;
2. `injc cpdt examples/demo/cpdt.toml --checkpoint it`: rows none, canaries, facts, bench, watermark, all, each
   trained 80 steps from the checkpoint with only its experiment written (about 1% of the tokens each);
3. copy cpdt.md, cpdt.json and the heatmap into examples/cpdt/results/ and write examples/cpdt/results.md.

What to look for: a diagonal of significant cells (each experiment's own data moves its own outcome), no
significant cell off the diagonal (no interference), and an `all` row that moves every outcome like its column's
diagonal. results.md says which of these held in this run.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import injc
from injc.loop.cpdt import CpdtConfig, cpdt
from injc.train.trainer import TrainConfig, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLAN = ROOT / "examples" / "demo" / "cpdt.toml"
BASE_PLAN = ROOT / "examples" / "demo" / "plan.toml"
MODEL = ROOT / "examples" / "demo" / "tiny-gpt.yaml"


def verdicts(result: dict) -> list[str]:
    """Which of the three expected properties held, cell by cell, in words."""
    names = [o["experiment"] for o in result["outcomes"]]
    rows = result["matrix_rows"]
    significant = [[p is not None and p < 0.05 for p in row] for row in result["p_values"]]
    diagonal = [significant[rows.index(n)][c] for c, n in enumerate(names)]
    off = [(rows[r], names[c]) for r in range(len(names)) for c in range(len(names))
           if r != c and significant[r][c]]
    moved_by_all = [significant[rows.index("all")][c] for c in range(len(names))]
    return [
        f"- Diagonal (own data moves own outcome, p < 0.05): {sum(diagonal)} of {len(names)} "
        f"({', '.join(n for n, s in zip(names, diagonal) if not s) or 'all'}"
        f"{' not significant' if not all(diagonal) else ' significant'}).",
        f"- Off the diagonal (interference, p < 0.05): {len(off)} of {len(names) * (len(names) - 1)} cells"
        + (f": {', '.join(f'{r} → {c}' for r, c in off)}." if off else "."),
        f"- The `all` row moves {sum(moved_by_all)} of {len(names)} outcomes significantly.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs") / "cpdt", help="relative to the repository")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    os.chdir(ROOT)  # the results name every path relative to the repository, as the commands above give them
    started = time.perf_counter()
    shutil.rmtree(args.out / "report", ignore_errors=True)  # this script measures afresh; cpdt itself resumes
    injc.build(BASE_PLAN, args.out / "base-build", force=True, progress=False)
    checkpoint = train(args.out / "base-build" / "manifest.json",
                       TrainConfig(model=str(MODEL), out=args.out / "base-run", lr=2e-3, min_lr=2e-4, warmup_steps=20,
                                   seed=0, force=True), progress=False)
    result = cpdt(PLAN, CpdtConfig(checkpoint=checkpoint, seeds=args.seeds, lr=1e-3, min_lr=1e-4),
                  args.out / "report", progress=True)
    minutes = (time.perf_counter() - started) / 60
    (HERE / "results").mkdir(exist_ok=True)
    for name in ("cpdt.md", "cpdt.json", "cpdt.png"):
        shutil.copyfile(args.out / "report" / name, HERE / "results" / name)
    table = (args.out / "report" / "cpdt.md").read_text().split("\n", 2)[2]
    table = table.replace("](cpdt.png)", "](results/cpdt.png)")
    text = "\n".join([
        "# CPDT at toy scale: do the demo's experiments interfere?", "",
        f"`python examples/cpdt/run.py` ({minutes:.1f} minutes on the 2-core machine): the tiny model pretrained "
        f"200 steps on the demo build, then {len(result['rows'])} rows × {args.seeds} seeds of 80 steps "
        f"(163,840 tokens) from it with `examples/demo/cpdt.toml`.", "", "## What held", "",
        *verdicts(result), "", "## The matrix", "", table])
    (HERE / "results.md").write_text(text)
    print(text)
    print(json.dumps({"minutes": round(minutes, 1)}))


if __name__ == "__main__":
    main()
