"""The on-disk format and what reads it: shard writing, the insertions table, the manifest, the stream reader,
`injc verify`, `injc inspect`, `injc locate`, and the exports in other trainers' orders (OLMo-core, Megatron,
LitData, nanoGPT)."""
