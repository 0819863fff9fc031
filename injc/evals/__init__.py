"""Scoring a checkpoint: each experiment's effect as the paper measures it (one module per family, stats.py for
the tests and intervals, report.py for `injc eval`'s report.json, report.md and plots, model.py for the scorer of
LitGPT and Hugging Face models); and, for now beside them, the loops that drive builds and training around those
scores: control.py (`injc run`), cpdt.py (`injc cpdt`) and external.py (a window trained by the user's command)."""
