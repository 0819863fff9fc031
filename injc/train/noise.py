"""Embedding-noise directives (the paper's Gaussian watermark): noise on input embeddings, token ids unchanged.

The noise of one row is a pure function of (seed, step, row): an eval recomputes exactly what the trainer
added with `embedding_noise(...)`, without anything stored beside the manifest.
"""

from pathlib import Path

import numpy as np
import torch

from injc.errors import ManifestError
from injc.shards.manifest import Manifest, load_manifest
from injc.shards.stream import TokenStream


def noise_seed(seed: int, step: int, row: int) -> int:
    """A 63-bit seed mixing (seed, step, row) through numpy's SeedSequence (no collisions between neighbours)."""
    return int(np.random.SeedSequence([seed, step, row]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)


def embedding_noise(seed: int, step: int, row: int, length: int, width: int, std: float) -> torch.Tensor:
    """The [length, width] float32 noise added to row `row` of step `step` (generated on the CPU)."""
    generator = torch.Generator().manual_seed(noise_seed(seed, step, row))
    return torch.randn(length, width, generator=generator, dtype=torch.float32) * std


class EmbeddingNoise:
    """A forward hook on the token embedding that adds the directive's noise at its steps.

    The rows a forward pass holds are found from the token ids it embeds, not told by the caller: each input row
    is matched with the step's batch read from the build (its first tokens: `row[:-1]` as injc train feeds it, or the
    whole row as OLMo-core does). So the noise is right whatever order the trainer's loader splits a step over ranks
    and micro-batches (OLMo-core gives rank r the rows r, r + W, …). A row that is not in the manifest's step is an
    error: the trainer is not reading the step the manifest says. Identical rows in one step take their positions
    in the order the passes meet them.
    """

    def __init__(self, manifest: Manifest):
        self.manifest, self.by_step = manifest, {}
        for directive in manifest.data.get("directives", []):
            if directive.get("kind") != "embedding_noise":
                raise ManifestError(f"unknown trainer directive kind {directive.get('kind')!r}")
            for step in directive["steps"]:
                if int(step) in self.by_step:
                    raise ManifestError(f"two embedding_noise directives share step {int(step)}: the build refuses "
                                        f"that, so this manifest was not written by injc build")
                self.by_step[int(step)] = directive
        self.step = -1
        self.rows: list[int] = []
        self._stream: TokenStream | None = None
        self._batch = np.zeros((0, 0), dtype=np.int64)
        self._positions: dict[int, dict[bytes, list[int]]] = {}
        """Per input width: each row's first `width` tokens → the step-batch rows they can be (unused ones)."""

    def at(self, step: int) -> None:
        """Tell the hook the optimizer step the next forward passes belong to (the manifest's step)."""
        if step != self.step and step in self.by_step:
            self._stream = self._stream or TokenStream(self.manifest)
            self._batch, self._positions = self._stream.batch(step).astype(np.int64), {}
        self.step = step

    def _rows_of(self, tokens: torch.Tensor) -> list[int]:
        """The step-batch rows a pass's token ids are, each used once (identical rows: in order of use)."""
        ids = tokens.detach().to("cpu").numpy().astype(np.int64)
        width = ids.shape[-1]
        if width not in self._positions:
            self._positions[width] = {}
            for row, values in enumerate(self._batch[:, :width]):
                self._positions[width].setdefault(values.tobytes(), []).append(row)
        rows = []
        for values in ids.reshape(-1, width):
            free = self._positions[width].get(values.tobytes())
            if not free:
                raise ManifestError(f"a row embedded at step {self.step:,} is not one of the manifest's step "
                                    f"{self.step:,}: the trainer is not reading the steps the manifest defines, so "
                                    f"the watermark cannot be placed")
            rows.append(free.pop(0) if len(free) > 1 else free[0])
        return rows

    def __call__(self, module, inputs, output: torch.Tensor) -> torch.Tensor:
        directive = self.by_step.get(self.step)
        if directive is None:
            return output
        self.rows = self._rows_of(inputs[0])
        length, width = output.shape[-2], output.shape[-1]
        noise = torch.stack([embedding_noise(directive["seed"], self.step, row, length, width, directive["std"])
                             for row in self.rows])
        return output + noise.to(device=output.device, dtype=output.dtype).reshape(output.shape)


def attach_embedding_noise(manifest: str | Path | Manifest, embedding: torch.nn.Module) -> EmbeddingNoise:
    """Hook any PyTorch trainer's input embedding (a module called with token ids [rows, length] that returns
    [rows, length, width]) with the manifest's `embedding_noise` directives, and return the hook. Before each
    step's forward passes call `hook.at(step)` with the optimizer step; the hook finds which rows of the step each
    pass holds from the ids it embeds, so the noise of (step, row) is the same whoever holds the row.
    `injc train` uses exactly this."""
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    hook = EmbeddingNoise(manifest)
    embedding.register_forward_hook(hook)
    return hook
