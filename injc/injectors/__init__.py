"""Experiment families: each kind turns its plan section into payload items (and the records its eval needs).

A kind maps to a config class with `read(reader, name, kind, base, steps)` and `payload(ctx) -> Payload`.
"""

from injc.injectors.texts import FilePayloadConfig

KINDS = {
    "texts": FilePayloadConfig,
    "tokens": FilePayloadConfig,
}
