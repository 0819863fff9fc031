"""Plan → schedule: the plan and `injc check`, corpus readers and tokenizing workers (local or on Ray), the
schedule and placement (pure index math), payloads, and the build pipeline with its output folder (resume, stages,
the final swap)."""
