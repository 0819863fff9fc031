"""The on-disk format: shard writing and reading, the insertions table, the manifest, verify and inspect."""
