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


def olmo_core_rank(rank, world, port, files, manifest, out, export_dir=None):
    """One data-parallel rank under gloo: OLMo-core's own loader over the export, the hook told only the step, or
    (given the export folder) each batch's instance indices as OLMo-core's loader gives them."""
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
        hook = attach_embedding_noise(manifest, embedding, export=export_dir)
        served, noise = [], []
        with torch.no_grad():
            for step, batch in enumerate(loader):
                if export_dir is None:
                    hook.at(step)
                else:
                    assert hook.serve(batch["index"]) == step
                noise.append(embedding(batch["input_ids"]).numpy())
                served.append(batch["input_ids"].numpy())
        np.savez(f"{out}/rank{rank}.npz", served=np.stack(served), noise=np.stack(noise))
    finally:
        dist.destroy_process_group()


def run_olmo_core_ranks(manifest, tmp_path, told_instances: bool) -> None:
    import socket

    import torch.multiprocessing as mp

    from injc.shards.exports import export

    record = json.loads(export(manifest, "olmo-core", tmp_path / "olmo", seed=11).read_text())
    files = [str(tmp_path / "olmo" / f["path"]) for f in record["files"]]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    told = str(tmp_path / "olmo") if told_instances else None
    mp.start_processes(olmo_core_rank, args=(2, port, files, str(manifest), str(tmp_path), told), nprocs=2,
                       start_method="spawn")


def test_two_olmo_core_ranks_get_the_noise_of_the_rows_they_read(watermarked, tmp_path):
    manifest, directive = watermarked
    stream = injc.open_stream(manifest)
    run_olmo_core_ranks(manifest, tmp_path, told_instances=False)
    for rank in range(2):
        result = np.load(tmp_path / f"rank{rank}.npz")
        for step in range(10):
            rows = [rank, rank + 2]  # OLMo-core's split of a global batch: rank r reads rows r, r + W, …
            assert np.array_equal(result["served"][step], stream.batch(step)[rows])
            for served_row, row in enumerate(rows):
                expected = (contract_noise(directive["seed"], step, row, 64, 8, 0.5) if step in (3, 7)
                            else torch.zeros(64, 8))
                assert np.allclose(result["noise"][step][served_row], expected.numpy(), atol=1e-6), (rank, step)


def test_identical_rows_on_two_olmo_core_ranks_get_each_their_own_rows_noise(tmp_path_factory, tokenizer_path,
                                                                            tmp_path):
    """Rows 0 and 1 of noised step 3 hold the same tokens (two explicit full-row payloads): OLMo-core gives them to
    ranks 0 and 1, and each must get the noise of its own row, which only the loader's instance indices can tell."""
    row = [(7 * i + 3) % 360 + 5 for i in range(64)]
    root = tmp_path_factory.mktemp("duplicates")
    (root / "payloads").mkdir()
    (root / "payloads" / "rows.jsonl").write_text("".join(json.dumps({"tokens": row, "offset": offset}) + "\n"
                                                          for offset in (3 * 256, 3 * 256 + 64)))
    pinned = WATERMARK + ('[[experiments]]\nname = "twins"\nkind = "tokens"\nfile = "payloads/rows.jsonl"\n'
                          'placement = "explicit"\n')
    root = training_project(root, tokenizer_path, 10, pinned)
    injc.build(root / "plan.toml", root / "out", progress=False)
    manifest = root / "out" / "manifest.json"
    (directive,) = json.loads(manifest.read_text())["directives"]
    stream = injc.open_stream(manifest)
    assert np.array_equal(stream.batch(3)[0], stream.batch(3)[1]) and stream.batch(3)[0].tolist() == row
    run_olmo_core_ranks(manifest, tmp_path, told_instances=True)
    for rank in range(2):
        result = np.load(tmp_path / f"rank{rank}.npz")
        for step in (3, 4, 7):
            for served_row, row_number in enumerate([rank, rank + 2]):
                expected = (contract_noise(directive["seed"], step, row_number, 64, 8, 0.5) if step in (3, 7)
                            else torch.zeros(64, 8))
                assert np.allclose(result["noise"][step][served_row], expected.numpy(), atol=1e-6), (rank, step)


def test_rows_told_by_the_loader_are_checked_against_the_build(watermarked):
    manifest, _ = watermarked
    stream = injc.open_stream(manifest)
    hook = attach_embedding_noise(manifest, torch.nn.Embedding(400, 8))
    embedding = torch.nn.Embedding(400, 8)
    embedding.register_forward_hook(hook)
    with torch.no_grad():
        hook.at(3, rows=[1, 2])
        with pytest.raises(ManifestError, match="not the rows of the manifest's step 3 the loader named"):
            embedding(torch.from_numpy(stream.batch(3)[[2, 1]].astype(np.int64)))
        with pytest.raises(ManifestError, match="needs the export"):
            hook.serve([0, 1])


def test_an_export_of_a_watermarked_build_says_the_trainer_must_apply_the_noise(watermarked, tmp_path):
    from tests.test_cli import injc as run_injc

    manifest, directive = watermarked
    result = run_injc("export", manifest, "--to", "nanogpt", "--out", tmp_path / "nano")
    assert result.returncode == 0, result.stderr
    assert "gw adds embedding noise at 2 steps" in result.stderr and "attach_embedding_noise" in result.stderr
    noise = json.loads((tmp_path / "nano" / "export.json").read_text())["trainer_must_apply"]["embedding_noise"]
    assert noise["experiments"] == ["gw"] and noise["steps"] == len(directive["steps"]) == 2
    assert "attach_embedding_noise" in noise["how"]
