"""The LitGPT-based trainer that consumes the shards unchanged, step-exact and auditable (`injc train`): run
folders and resume, checkpoints, FSDP, the embedding-noise hook, loggers, and Hugging Face folders in and out."""
