"""Embedding-noise directives (the paper's Gaussian watermark): noise on input embeddings, token ids unchanged.

The noise of one row is a pure function of (seed, step, row): an eval recomputes exactly what the trainer
added with `embedding_noise(...)`, without anything stored beside the manifest.
"""

from pathlib import Path

import numpy as np
import torch

from injc.errors import ManifestError
from injc.shards.exports import export_of
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

    Which rows of the step a forward pass holds is best told by the loader: `serve(batch["index"])` with an
    export's instance indices (OLMo-core's batches carry them), or `at(step, rows=...)`; the ids each told row
    embeds are checked against the build. Told only the step, the hook matches each input row with the step's
    batch read from the build (its first tokens: `row[:-1]` as injc train feeds it, or the whole row as OLMo-core
    does); that is right whatever order the loader splits a step in, except for identical rows on different ranks,
    which each rank would take for the first of them. A row that is not in the manifest's step is an error: the
    trainer is not reading the step the manifest says.
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
        self.file_rows: np.ndarray | None = None
        """An export's rows.npy (file row i holds manifest row file_rows[i]), for `serve`."""
        self._told: list[int] = []
        self._stream: TokenStream | None = None
        self._batch = np.zeros((0, 0), dtype=np.int64)
        self._positions: dict[int, dict[bytes, list[int]]] = {}
        """Per input width: each row's first `width` tokens → the step-batch rows they can be (unused ones)."""

    def at(self, step: int, rows=None) -> None:
        """Tell the hook the optimizer step the next forward passes belong to (the manifest's step) and, where the
        loader says, `rows`: the step's row numbers (0 to batch_size − 1) those passes embed, in order."""
        if step != self.step and step in self.by_step:
            self._stream = self._stream or TokenStream(self.manifest)
            self._batch, self._positions = self._stream.batch(step).astype(np.int64), {}
        self.step = step
        self._told = [] if rows is None else [int(row) for row in np.asarray(rows).reshape(-1)]

    def serve(self, instances) -> int:
        """Tell the hook the instances (file rows of the export it was attached with, e.g. OLMo-core's
        `batch["index"]`) the next forward passes embed, in order; their step and rows follow from rows.npy, so no
        step counter is needed (a resumed loader included). Returns the step."""
        if self.file_rows is None:
            raise ManifestError("serve() needs the export the loader reads: attach_embedding_noise(..., export=DIR)")
        stream_rows = self.file_rows[np.asarray(instances, dtype=np.int64).reshape(-1)].astype(np.int64)
        steps = np.unique(stream_rows // self.manifest.layout.batch_size)
        if len(steps) != 1:
            raise ManifestError(f"one batch holds rows of steps {', '.join(map(str, steps[:5]))}: the loader does not "
                                f"serve the export's steps as export.json says")
        self.at(int(steps[0]), stream_rows % self.manifest.layout.batch_size)
        return int(steps[0])

    def _rows_of(self, tokens: torch.Tensor) -> list[int]:
        """The step-batch rows a pass's token ids are, each used once (identical rows: in order of use)."""
        ids = tokens.detach().to("cpu").numpy().astype(np.int64)
        width = ids.shape[-1]
        if self._told:
            ids = ids.reshape(-1, width)
            rows, self._told = self._told[:len(ids)], self._told[len(ids):]
            if len(rows) < len(ids) or not np.array_equal(self._batch[rows, :width], ids):
                raise ManifestError(f"the rows embedded at step {self.step:,} are not the rows of the manifest's "
                                    f"step {self.step:,} the loader named: the watermark cannot be placed")
            return rows
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


def attach_embedding_noise(manifest: str | Path | Manifest, embedding: torch.nn.Module,
                           export: str | Path | None = None) -> EmbeddingNoise:
    """Hook any PyTorch trainer's input embedding (a module called with token ids [rows, length] that returns
    [rows, length, width]) with the manifest's `embedding_noise` directives, and return the hook. Before each
    step's forward passes tell it what they hold: `hook.serve(batch["index"])` with `export` (the injc export
    folder the loader reads; OLMo-core's batches carry each instance's index), or `hook.at(step)` with the
    optimizer step (the hook then finds the rows from the ids it embeds). The noise of (step, row) is the same
    whoever holds the row. `injc train` uses exactly this."""
    manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    hook = EmbeddingNoise(manifest)
    if export is not None:
        hook.file_rows = export_of(export, manifest)[1]
    embedding.register_forward_hook(hook)
    return hook
