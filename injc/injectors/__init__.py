"""Experiment families: each kind turns its plan section into payload items (and the records its eval needs).

A kind maps to a config class with `read(reader, name, kind, base, steps)` and `payload(ctx) -> Payload`.
"""

from injc.injectors.canaries import CanariesConfig
from injc.injectors.contamination import ContaminationConfig
from injc.injectors.documents import DocumentsConfig
from injc.injectors.knowledge import KnowledgeConfig
from injc.injectors.math import MathConfig
from injc.injectors.poisoning import PoisoningConfig
from injc.injectors.replacements import ForgettingConfig, IidConfig
from injc.injectors.texts import FilePayloadConfig
from injc.injectors.verbatim import VerbatimRemovalConfig
from injc.injectors.watermark import WatermarkConfig

KINDS = {
    "texts": FilePayloadConfig,
    "tokens": FilePayloadConfig,
    "contamination": ContaminationConfig,
    "canaries": CanariesConfig,
    "poisoning": PoisoningConfig,
    "knowledge": KnowledgeConfig,
    "math": MathConfig,
    "iid": IidConfig,
    "forgetting": ForgettingConfig,
    "documents": DocumentsConfig,
    "verbatim-removal": VerbatimRemovalConfig,
    "gaussian-watermark": WatermarkConfig,
}
