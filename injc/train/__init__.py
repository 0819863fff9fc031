"""The LitGPT-based trainer that consumes the shards unchanged (not built yet; see the trainer issue)."""
