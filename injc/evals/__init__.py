"""Scoring a checkpoint: each experiment's effect as the paper measures it (one module per family, stats.py for
the tests and intervals, heldout.py for the held-out loss, report.py for `injc eval`'s report.json, report.md and
plots, model.py for the scorer of LitGPT and Hugging Face models), benchmarks.py for lm-evaluation-harness's
tasks (`--benchmarks`), compare.py for `injc compare` (two reports, paired), and verbatim_candidates.py, the
selection before a run. The loops that build and train around these scores are in injc.loop."""
