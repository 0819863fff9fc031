"""The LitGPT-based trainer that consumes the shards unchanged, step-exact and auditable (`injc train`)."""
