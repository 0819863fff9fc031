"""Per-experiment evaluations of a checkpoint (not built yet; see the evals issue)."""
