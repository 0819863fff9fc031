"""injc: compile controlled pretraining experiments into deterministic, pre-tokenized memmap shards.

Python API (the CLI is a thin layer over these)::

    import injc
    report = injc.check("examples/demo/plan.toml")          # validates every input, writes nothing
    result = injc.build("examples/demo/plan.toml", "out/demo")
    report = injc.inspect("out/demo/manifest.json")
    problems = injc.verify("out/demo/manifest.json")
    stream = injc.open_stream("out/demo/manifest.json")   # stream.batch(step) -> [batch_size, seq_len]
"""

__version__ = "0.1.0"

from injc.compiler.build import BuildResult, build  # noqa: E402
from injc.compiler.check import CheckReport, check  # noqa: E402
from injc.compiler.plan import Plan, load_plan  # noqa: E402
from injc.errors import InjcError, InputError, Interrupted, LayoutError, ManifestError, PlanError  # noqa: E402
from injc.shards.inspect import inspect  # noqa: E402
from injc.shards.layout import Layout  # noqa: E402
from injc.shards.manifest import Manifest, load_manifest  # noqa: E402
from injc.shards.stream import TokenStream, open_stream  # noqa: E402
from injc.shards.verify import verify  # noqa: E402

__all__ = [
    "BuildResult", "CheckReport", "InjcError", "InputError", "Interrupted", "Layout", "LayoutError", "Manifest",
    "ManifestError", "Plan", "PlanError", "TokenStream", "build", "check", "inspect", "load_manifest", "load_plan",
    "open_stream", "verify",
]
