"""Plan → schedule: plan loading, tokenizer, corpus reading, index math, placement, and the build pipeline."""
