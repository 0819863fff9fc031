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

from importlib import import_module

from injc.errors import InjcError, InputError, Interrupted, LayoutError, ManifestError, PlanError  # noqa: E402

_LAZY = {
    "BuildOptions": "injc.compiler.options", "BuildResult": "injc.compiler.build", "build": "injc.compiler.build",
    "CheckReport": "injc.compiler.check", "check": "injc.compiler.check", "Plan": "injc.compiler.plan",
    "load_plan": "injc.compiler.plan", "inspect": "injc.shards.inspect", "Layout": "injc.shards.layout",
    "Manifest": "injc.shards.manifest", "load_manifest": "injc.shards.manifest", "TokenStream": "injc.shards.stream",
    "open_stream": "injc.shards.stream", "verify": "injc.shards.verify",
}
"""The API's names, imported on first use: `import injc` (and so every `injc` command's start) stays light, and a
command loads only what it runs (numpy, pyarrow, the tokenizer stack)."""


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'injc' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "BuildOptions", "BuildResult", "CheckReport", "InjcError", "InputError", "Interrupted", "Layout", "LayoutError",
    "Manifest", "ManifestError", "Plan", "PlanError", "TokenStream", "build", "check", "inspect", "load_manifest",
    "load_plan", "open_stream", "verify",
]
