"""Embedding-noise directives (the paper's Gaussian watermark): noise on input embeddings, token ids unchanged.

The noise of one row is a pure function of (seed, step, row): an eval recomputes exactly what the trainer
added with `embedding_noise(...)`, without anything stored beside the manifest.
"""

from pathlib import Path

import numpy as np
import torch

from injc.errors import ManifestError
from injc.shards.manifest import Manifest, load_manifest


def noise_seed(seed: int, step: int, row: int) -> int:
    """A 63-bit seed mixing (seed, step, row) through numpy's SeedSequence (no collisions between neighbours)."""
    return int(np.random.SeedSequence([seed, step, row]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)


def embedding_noise(seed: int, step: int, row: int, length: int, width: int, std: float) -> torch.Tensor:
    """The [length, width] float32 noise added to row `row` of step `step` (generated on the CPU)."""
    generator = torch.Generator().manual_seed(noise_seed(seed, step, row))
    return torch.randn(length, width, generator=generator, dtype=torch.float32) * std


class EmbeddingNoise:
    """A forward hook on the token embedding that adds the directive's noise at its steps."""

    def __init__(self, directives: list[dict]):
        self.by_step: dict[int, dict] = {}
        for directive in directives:
            if directive.get("kind") != "embedding_noise":
                raise ManifestError(f"unknown trainer directive kind {directive.get('kind')!r}")
            for step in directive["steps"]:
                if int(step) in self.by_step:
                    raise ManifestError(f"two embedding_noise directives share step {int(step)}: the build refuses "
                                        f"that, so this manifest was not written by injc build")
                self.by_step[int(step)] = directive
        self.step = -1
        self.rows: range = range(0)

    def at(self, step: int, rows: range) -> None:
        """Tell the hook which step and which rows of the batch the next forward pass holds."""
        self.step, self.rows = step, rows

    def __call__(self, module, inputs, output: torch.Tensor) -> torch.Tensor:
        directive = self.by_step.get(self.step)
        if directive is None:
            return output
        length, width = output.shape[-2], output.shape[-1]
        noise = torch.stack([embedding_noise(directive["seed"], self.step, row, length, width, directive["std"])
                             for row in self.rows])
        return output + noise.to(device=output.device, dtype=output.dtype)


def attach_embedding_noise(manifest: str | Path | Manifest, embedding: torch.nn.Module) -> EmbeddingNoise:
    """Hook any PyTorch trainer's input embedding (a module whose output is [rows, length, width]) with the
    manifest's `embedding_noise` directives, and return the hook. Before each forward pass call
    `hook.at(step, rows)`: the optimizer step and which rows of that step's batch the pass holds (on
    data-parallel rank r of R with micro-batches, the rows of the step that rank and micro-batch read), so the
    noise of (step, row) is the same whoever holds the row. `injc train` uses exactly this."""
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    hook = EmbeddingNoise(manifest.data.get("directives", []))
    embedding.register_forward_hook(hook)
    return hook
