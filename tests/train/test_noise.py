"""The embedding-noise hook from any PyTorch trainer: the noise the manifest's contract defines, at its steps, on the
rows each pass really holds, whichever order the trainer's loader splits a step in."""

import json

import numpy as np
import pytest

import injc
from injc.errors import ManifestError
from tests.train.conftest import training_project

torch = pytest.importorskip("torch")

from injc.train.noise import attach_embedding_noise  # noqa: E402

WATERMARK = """
[[experiments]]
name = "gw"
kind = "gaussian-watermark"
steps = [3, 7]
std = 0.5
"""


def contract_noise(seed, step, row, length, width, std):
    """docs/format.md: torch CPU generator seeded from SeedSequence([seed, step, row]) (63 bits), N(0, std²)."""
    state = int(np.random.SeedSequence([seed, step, row]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
    return torch.randn(length, width, generator=torch.Generator().manual_seed(state)) * std


@pytest.fixture(scope="module")
def watermarked(tmp_path_factory, tokenizer_path):
    root = training_project(tmp_path_factory.mktemp("noise"), tokenizer_path, 10, WATERMARK)
    injc.build(root / "plan.toml", root / "out", progress=False)
    (directive,) = json.loads((root / "out" / "manifest.json").read_text())["directives"]
    return root / "out" / "manifest.json", directive


def test_the_hook_finds_the_rows_each_pass_holds_and_adds_their_noise_only_at_its_steps(watermarked):
    manifest, directive = watermarked
    stream = injc.open_stream(manifest)
    embedding = torch.nn.Embedding(400, 8)
    hook = attach_embedding_noise(manifest, embedding)
    for rows, width in (([2, 3], 63), ([3, 1], 64), ([0], 63)):  # contiguous, strided (as OLMo-core), one row
        ids = torch.from_numpy(stream.batch(3)[rows, :width].astype(np.int64))
        with torch.no_grad():
            hook.at(3)
            noised = embedding(ids)
        expected = torch.stack([contract_noise(directive["seed"], 3, row, width, 8, 0.5) for row in rows])
        assert torch.allclose(noised - embedding.weight[ids], expected, atol=1e-6), rows
    with torch.no_grad():
        hook.at(4)
        plain_ids = torch.from_numpy(stream.batch(4)[:2].astype(np.int64))
        assert torch.equal(embedding(plain_ids), embedding.weight[plain_ids])
        hook.at(7)
        with pytest.raises(ManifestError, match="not one of the manifest's step 7"):
            embedding(torch.from_numpy(stream.batch(6)[:1].astype(np.int64)))


def olmo_core_rank(rank, world, port, files, manifest, out):
    """One data-parallel rank under gloo: OLMo-core's own loader over the export, the hook told only the step."""
    import torch.distributed as dist
    from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDataset

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dataset = NumpyFSLDataset(*files, sequence_length=64, pad_token_id=0, eos_token_id=0, vocab_size=400,
                                  dtype=np.uint16)
        loader = NumpyDataLoaderConfig(global_batch_size=4 * 64, seed=11, work_dir=f"{out}/work{rank}").build(dataset)
        loader.reshuffle(epoch=1)
        embedding = torch.nn.Embedding(400, 8)
        torch.nn.init.zeros_(embedding.weight)  # the output is the noise alone
        hook = attach_embedding_noise(manifest, embedding)
        served, noise = [], []
        with torch.no_grad():
            for step, batch in enumerate(loader):
                hook.at(step)
                noise.append(embedding(batch["input_ids"]).numpy())
                served.append(batch["input_ids"].numpy())
        np.savez(f"{out}/rank{rank}.npz", served=np.stack(served), noise=np.stack(noise))
    finally:
        dist.destroy_process_group()


def test_two_olmo_core_ranks_get_the_noise_of_the_rows_they_read(watermarked, tmp_path):
    import socket

    import torch.multiprocessing as mp

    from injc.shards.exports import export

    manifest, directive = watermarked
    stream = injc.open_stream(manifest)
    record = json.loads(export(manifest, "olmo-core", tmp_path / "olmo", seed=11).read_text())
    files = [str(tmp_path / "olmo" / f["path"]) for f in record["files"]]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(olmo_core_rank, args=(2, port, files, str(manifest), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        result = np.load(tmp_path / f"rank{rank}.npz")
        for step in range(10):
            rows = [rank, rank + 2]  # OLMo-core's split of a global batch: rank r reads rows r, r + W, …
            assert np.array_equal(result["served"][step], stream.batch(step)[rows])
            for served_row, row in enumerate(rows):
                expected = (contract_noise(directive["seed"], step, row, 64, 8, 0.5) if step in (3, 7)
                            else torch.zeros(64, 8))
                assert np.allclose(result["noise"][step][served_row], expected.numpy(), atol=1e-6), (rank, step)
