"""`injc export`: each trainer's own, unmodified loader (the real library, its defaults) serves the manifest's
step k at step k; without the export it does not."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import injc
from injc.shards.export_check import verify_export
from injc.shards.exports import export
from injc.shards.megatron import megatron_index
from tests.conftest import CANARIES, flip_bit
from tests.test_cli import assert_user_error
from tests.test_cli import injc as run_injc

torch = pytest.importorskip("torch")
LAYOUT = "seq_len = 64\nbatch_size = 4\nsteps = 40\nseed = 7"


@pytest.fixture
def built(project, tmp_path):
    result = injc.build(project(CANARIES, layout=LAYOUT, extra_layout="shard_tokens = 2560"), tmp_path / "build",
                        progress=False)
    return result.manifest_path


def steps_served(batches, stream) -> list[bool]:
    return [np.array_equal(np.asarray(batch), stream.batch(k)) for k, batch in enumerate(batches)]


def olmo_core_batches(files, seed, work_dir):
    from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDataset

    dataset = NumpyFSLDataset(*files, sequence_length=64, pad_token_id=0, eos_token_id=0, vocab_size=400,
                              dtype=np.uint16)
    loader = NumpyDataLoaderConfig(global_batch_size=4 * 64, seed=seed, work_dir=str(work_dir)).build(dataset)
    loader.reshuffle(epoch=1)
    return [batch["input_ids"].numpy() for batch in loader]


def test_olmo_core_default_loader_serves_every_step_of_the_export(built, tmp_path):
    stream = injc.open_stream(built)
    record = json.loads(export(built, "olmo-core", tmp_path / "olmo", seed=1234).read_text())
    files = [tmp_path / "olmo" / f["path"] for f in record["files"]]
    served = steps_served(olmo_core_batches(files, 1234, tmp_path / "work"), stream)
    assert len(served) == 40 and all(served)
    assert verify_export(tmp_path / "olmo") == []
    # the contrast: the same loader on the build's own shards serves (almost) none of the steps
    shards = sorted((built.parent / "shards").glob("*.bin"))
    assert sum(steps_served(olmo_core_batches(shards, 1234, tmp_path / "work2"), stream)) <= 2
    # another seed: another order, so the export for 1234 no longer lines up
    assert sum(steps_served(olmo_core_batches(files, 99, tmp_path / "work3"), stream)) <= 2


def test_build_target_olmo_core_writes_the_export_once_and_injc_reads_it_through_the_row_map(project, built,
                                                                                            tmp_path, monkeypatch):
    import injc.shards.olmo_core as olmo_core

    monkeypatch.setattr(olmo_core, "FILE_BYTES", 50 * 64 * 2)  # 50 rows a file: the 160 rows scatter over 4 files
    plan = built.parent.parent / "plan.toml"
    target = injc.build(plan, tmp_path / "direct", progress=False, target="olmo-core:1234")
    plain, direct = injc.open_stream(built), injc.open_stream(target.manifest_path)
    record = json.loads((tmp_path / "direct" / "export.json").read_text())
    files = [tmp_path / "direct" / f["path"] for f in record["files"]]
    assert len(files) == 4
    # OLMo-core's own default loader serves every step of the plain build
    served = steps_served(olmo_core_batches(files, 1234, tmp_path / "work"), plain)
    assert len(served) == 40 and all(served)
    # the same bytes as exporting the plain build (one copy instead of two)
    export(built, "olmo-core", tmp_path / "exported", seed=1234)
    exported = json.loads((tmp_path / "exported" / "export.json").read_text())["files"]
    assert b"".join(f.read_bytes() for f in files) == b"".join(
        (tmp_path / "exported" / f["path"]).read_bytes() for f in exported)
    # injc reads the stream through the row map: steps, tokens across rows and scattered positions
    assert all(np.array_equal(direct.batch(k), plain.batch(k)) for k in range(40))
    assert np.array_equal(direct.tokens(100, 5000), plain.tokens(100, 5000))
    positions = np.sort(np.random.default_rng(0).choice(40 * 256, 500, replace=False))
    assert np.array_equal(direct.gather(positions), plain.gather(positions))
    assert injc.verify(target.manifest_path) == [] and verify_export(tmp_path / "direct") == []
    # exports made from it are those of the plain build
    export(target.manifest_path, "nanogpt", tmp_path / "nano-direct")
    export(built, "nanogpt", tmp_path / "nano-plain")
    assert (tmp_path / "nano-direct" / "train.bin").read_bytes() == (tmp_path / "nano-plain" / "train.bin").read_bytes()
    # a damaged row map is found, never read as another order
    flip_bit(tmp_path / "direct" / "rows.npy", 200)
    assert any("row map rows.npy" in problem for problem in injc.verify(target.manifest_path))
    # and --force replaces a target build (it holds only what injc wrote)
    injc.build(plan, tmp_path / "direct", progress=False, force=True, target="olmo-core:1234")
    assert injc.verify(target.manifest_path) == []
    # `injc verify DIR` checks such a folder as a build too, not only as an export
    assert run_injc("verify", tmp_path / "direct").returncode == 0
    flip_bit(tmp_path / "direct" / "insertions.parquet", 100)
    assert run_injc("verify", tmp_path / "direct").returncode == 1


def test_a_killed_target_build_resumes_to_the_same_bytes(project, tmp_path):
    """400 one-step stream shards scattered over OLMo-core's order; Ctrl-C after the 5th, then the same command."""
    import subprocess
    import sys

    from tests.conftest import make_documents, write_jsonl
    from tests.test_cli import REPO
    from tests.test_user_mistakes import interrupt_after_shards, interruptible, snapshot

    write_jsonl(project.root / "data" / "c.jsonl", [{"text": t} for t in make_documents(1500, seed=4)])
    plan = project(CANARIES, layout="seq_len = 64\nbatch_size = 4\nsteps = 400\nseed = 7",
                   extra_layout="shard_tokens = 256")
    injc.build(plan, tmp_path / "reference", progress=False, target="olmo-core:3")
    command = [sys.executable, "-m", "injc", "build", str(plan), "--out", str(tmp_path / "out"), "--quiet",
               "--target", "olmo-core:3"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)
    done = tmp_path / ".out.injc-partial" / "done"
    interrupt_after_shards(process, done, 5, 120)
    kept = len(list(done.glob("*.json")))
    assert not (tmp_path / "out").exists() and 5 <= kept < 400
    # damage the last finished shard's first row where OLMo-core's order put it: the resume keeps the shards
    # before it and must notice this one and write it again
    from injc.shards.olmo_core import olmo_core_order

    row = int(olmo_core_order(1600, 3)[4 * (kept - 1)])
    flip_bit(tmp_path / ".out.injc-partial" / "shards" / "part-00000.npy", row * 64 * 2)
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "reference")


def test_a_target_build_grown_in_stages_serves_each_stage_and_ends_byte_identical(built, tmp_path, monkeypatch):
    """Stages of 15, 35 and 40 steps in OLMo-core's order: after each, OLMo-core's own loader serves the written
    steps (the rest of the files still zeros), its dataset fingerprint (file names, sizes) never changes, and the
    grown build equals the one-shot target build, file for file."""
    from olmo_core.data import NumpyFSLDataset

    import injc.shards.olmo_core as olmo_core
    from tests.test_build import all_files

    monkeypatch.setattr(olmo_core, "FILE_BYTES", 50 * 64 * 2)  # 4 files: every stage writes into several
    plan = built.parent.parent / "plan.toml"
    plain = injc.open_stream(built)
    one_shot = injc.build(plan, tmp_path / "whole", progress=False, target="olmo-core:1234")
    staged, fingerprints = tmp_path / "staged", set()
    for until in (15, 35):
        result = injc.build(plan, staged, until_step=until, extend=until > 15, progress=False, target="olmo-core:1234")
        assert result.until_step == until and injc.verify(staged) == [] and verify_export(staged) == []
        files = [staged / f["path"] for f in json.loads((staged / "export.json").read_text())["files"]]
        batches = olmo_core_batches(files, 1234, tmp_path / f"work{until}")
        assert all(steps_served(batches[:until], plain))
        assert not any(np.asarray(batch).any() for batch in batches[until:])
        assert np.array_equal(injc.open_stream(staged).batch(until - 1), plain.batch(until - 1))
        fingerprints.add(NumpyFSLDataset(*files, sequence_length=64, pad_token_id=0, eos_token_id=0, vocab_size=400,
                                         dtype=np.uint16).fingerprint)
    injc.build(plan, staged, progress=False, target="olmo-core:1234")
    assert len(fingerprints) == 1
    assert all_files(staged) == all_files(tmp_path / "whole")
    assert injc.verify(one_shot.manifest_path) == []


def test_exports_of_a_staged_build_serve_its_steps_and_grow_with_it_to_the_whole_runs_export(built, tmp_path):
    """A build grown in stages of 15, 35, 40 steps, exported after each stage into the same folders: each export
    serves the written steps through its trainer's own loader (rows not written yet are zeros), and the grown
    exports equal those of the one-shot build, file for file; the same export run twice changes nothing. LitData
    cannot grow: refused."""
    from injc.shards.nanogpt import StepBatches
    from tests.test_build import all_files

    plan, staged, full = built.parent.parent / "plan.toml", tmp_path / "staged", injc.open_stream(built)
    targets = {"olmo-core": 1234, "megatron": 1234, "nanogpt": None}
    for until in (15, 35, 40):
        injc.build(plan, staged, until_step=until if until < 40 else None, extend=until < 40 and until > 15,
                   progress=False)
        for target, seed in targets.items():
            export(staged / "manifest.json", target, tmp_path / target, seed=seed)
            assert verify_export(tmp_path / target) == [], (target, until)
        files = [tmp_path / "olmo-core" / f["path"]
                 for f in json.loads((tmp_path / "olmo-core" / "export.json").read_text())["files"]]
        batches = olmo_core_batches(files, 1234, tmp_path / f"work{until}")
        assert all(steps_served(batches[:until], full)) and not any(np.asarray(b).any() for b in batches[until:])
        train = megatron_lm_dataset(tmp_path / "megatron" / "data", 1234, tmp_path / f"cache{until}")[0]
        assert all(np.array_equal(train[k]["tokens"].numpy(), full.batch(k // 4)[k % 4]) for k in range(until * 4))
        assert until == 40 or not train[until * 4]["tokens"].numpy().any()
        nano = StepBatches(tmp_path / "nanogpt", seq_len=64, rows_per_step=4, micro_batch_size=4, ddp_rank=0,
                           ddp_world_size=1)
        nano.start_at(until - 1)
        assert nano.get_batch("train")[0][0].tolist() == full.batch(until - 1)[0, :-1].tolist()
        if until == 15:  # the same command again does nothing; another seed is another export
            before = {target: all_files(tmp_path / target) for target in targets}
            for target, seed in targets.items():
                assert run_injc("export", staged / "manifest.json", "--to", target, "--out", tmp_path / target,
                                *(["--seed", str(seed)] if seed is not None else [])).returncode == 0
                assert all_files(tmp_path / target) == before[target]
            assert_user_error(run_injc("export", staged / "manifest.json", "--to", "megatron", "--seed", "99",
                                       "--out", tmp_path / "megatron"), "already exists")
    for target, seed in targets.items():
        export(built, target, tmp_path / f"{target}-one-shot", seed=seed)
        mine, theirs = all_files(tmp_path / target), all_files(tmp_path / f"{target}-one-shot")
        assert mine.pop("export.json") and theirs.pop("export.json") and mine == theirs, target
    injc.build(plan, tmp_path / "litdata-staged", until_step=10, progress=False)
    assert_user_error(run_injc("export", tmp_path / "litdata-staged", "--to", "litdata", "--out", tmp_path / "ld"),
                      "cannot be exported for litdata")
    assert not (tmp_path / "ld").exists()


def test_bad_targets_are_one_line_and_write_nothing(built, tmp_path):
    plan = built.parent.parent / "plan.toml"
    for arguments, message in ((["--target", "megatron:1"], "only olmo-core is written directly"),
                               (["--target", "olmo-core"], "give OLMo-core's data seed")):
        assert_user_error(run_injc("build", plan, "--out", tmp_path / "x", *arguments), message)
        assert not (tmp_path / "x").exists()


class Tokenizer:
    """The trainer's tokenizer as GPTDatasetConfig sees it (ids only; the samples are read, not tokenized)."""

    eod = pad = 0
    vocab_size = 400
    unique_identifiers = {"class": "test"}


def megatron_lm_dataset(prefix, seed, cache, train_iters=40, global_batch_size=4, extra_token=None):
    """The training GPTDataset as Megatron-LM's pretrain_gpt.py builds it from its arguments: its
    `core_gpt_dataset_config_from_args` (no add_extra_token_to_sequence argument: the config's default), and
    `train_valid_test_num_samples` with its defaults --eval-interval 1000 --eval-iters 100, for `--data-path prefix
    --split 100,0,0 --seed seed --seq-length 64 --global-batch-size 4 --train-iters 40 --data-cache-path cache`."""
    import argparse
    import warnings

    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    args = argparse.Namespace(seed=seed, seq_length=64, data_path=[str(prefix)], split="100,0,0",
                              data_cache_path=str(cache), mmap_bin_files=True, reset_position_ids=False,
                              reset_attention_mask=False, eod_mask_loss=False, create_attention_mask_in_dataloader=True,
                              num_dataset_builder_threads=1, train_iters=train_iters, eval_interval=1000,
                              eval_iters=100, global_batch_size=global_batch_size)
    fields = dict(random_seed=args.seed, sequence_length=args.seq_length, blend=(args.data_path, None),
                  blend_per_split=None, split=args.split, num_dataset_builder_threads=args.num_dataset_builder_threads,
                  path_to_cache=args.data_cache_path, mmap_bin_files=args.mmap_bin_files, tokenizer=Tokenizer(),
                  reset_position_ids=args.reset_position_ids, reset_attention_mask=args.reset_attention_mask,
                  eod_mask_loss=args.eod_mask_loss, create_attention_mask=args.create_attention_mask_in_dataloader)
    if extra_token is not None:
        fields["add_extra_token_to_sequence"] = extra_token
    eval_iters = (args.train_iters // args.eval_interval + 1) * args.eval_iters
    samples = [args.train_iters * args.global_batch_size, eval_iters * args.global_batch_size,
               args.eval_iters * args.global_batch_size]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BlendedMegatronDatasetBuilder(GPTDataset, samples, lambda: True, GPTDatasetConfig(**fields)).build()


def megatron_rank_batches(dataset, rank, data_parallel=2, micro_batch=1, global_batch=4):
    """What Megatron-LM's MegatronPretrainingSampler gives one data-parallel rank: samples taken in order, each
    micro-batch of micro_batch × data_parallel split by rank; accumulation steps fill the global batch."""
    served = []
    for first in range(0, len(dataset) - len(dataset) % global_batch, global_batch):
        per_step = []
        for start in range(first, first + global_batch, micro_batch * data_parallel):
            per_step += [dataset[i] for i in range(start + rank * micro_batch, start + (rank + 1) * micro_batch)]
        served.append(per_step)
    return served


def rows_served(dataset, stream) -> int:
    return sum(np.array_equal(dataset[k]["tokens"].numpy(), stream.batch(k // 4)[k % 4]) for k in range(160))


def test_megatron_lm_with_its_own_defaults_and_the_stated_arguments_serves_every_step(built, tmp_path):
    stream = injc.open_stream(built)
    record = json.loads(export(built, "megatron", tmp_path / "meg", seed=1234).read_text())
    assert verify_export(tmp_path / "meg") == []
    assert sorted(p.name for p in (tmp_path / "meg").iterdir()) == ["data.bin", "data.idx", "export.json", "rows.npy"]
    assert "--split 100,0,0 --seed 1234 --seq-length 64" in record["loader"]["megatron_lm"]
    assert (tmp_path / "meg" / "data.bin").read_bytes() == stream.tokens(0, len(stream)).tobytes()
    train, valid, test = megatron_lm_dataset(tmp_path / "meg" / "data", 1234, tmp_path / "cache")
    assert len(train) == 160 and valid is None and test is None
    for rank in range(2):
        for step, samples in enumerate(megatron_rank_batches(train, rank)):
            for micro_step, sample in enumerate(samples):
                row = stream.batch(step)[micro_step * 2 + rank]
                assert sample["tokens"].tolist() == row.tolist() and sample["labels"][:-1].tolist() == row[1:].tolist()
    # contrasts: another seed; add_extra_token_to_sequence=False (with a cache of its own); the plain stream as
    # Megatron data (every document pointing at its own row)
    assert rows_served(megatron_lm_dataset(tmp_path / "meg" / "data", 7, tmp_path / "c7")[0], stream) <= 8
    without = megatron_lm_dataset(tmp_path / "meg" / "data", 1234, tmp_path / "c-no-extra", extra_token=False)[0]
    assert rows_served(without, stream) < 150  # 134 of 160 samples at their step: not step-exact
    megatron_index(tmp_path / "meg" / "data.idx", 8, 64, np.arange(160) * 128)
    assert rows_served(megatron_lm_dataset(tmp_path / "meg" / "data", 1234, tmp_path / "c-plain")[0], stream) <= 8


def test_litdata_streaming_loader_serves_every_step_with_the_workers_it_was_written_for(built, tmp_path):
    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader

    stream = injc.open_stream(built)
    export(built, "litdata", tmp_path / "lit")
    dataset = StreamingDataset(str(tmp_path / "lit"), item_loader=TokensLoader(block_size=64))
    served = steps_served([b.numpy() for b in StreamingDataLoader(dataset, batch_size=4)], stream)
    assert len(served) == 40 and all(served)
    # two workers read contiguous halves in turn: the in-order export is scrambled, the one written for 2 is not
    dataset = StreamingDataset(str(tmp_path / "lit"), item_loader=TokensLoader(block_size=64))
    assert sum(steps_served([b.numpy() for b in StreamingDataLoader(dataset, batch_size=4, num_workers=2)],
                            stream)) <= 2
    export(built, "litdata", tmp_path / "lit2", num_workers=2)
    dataset = StreamingDataset(str(tmp_path / "lit2"), item_loader=TokensLoader(block_size=64))
    served = steps_served([b.numpy() for b in StreamingDataLoader(dataset, batch_size=4, num_workers=2)], stream)
    assert len(served) == 40 and all(served)


def litdata_rank(rank: int, world: int, port: int, folder: str, workers: int, out: str) -> None:
    """One data-parallel rank: a gloo process group (as under DDP), then LitData's default dataset and loader."""
    import torch.distributed as dist
    from litdata import StreamingDataLoader, StreamingDataset, TokensLoader

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dataset = StreamingDataset(folder, item_loader=TokensLoader(block_size=64))
        loader = StreamingDataLoader(dataset, batch_size=4 // world, num_workers=workers)
        np.save(f"{out}/rank{rank}.npy", np.stack([batch.numpy() for batch in loader]))
    finally:
        dist.destroy_process_group()


def rank_batches(folder, workers, tmp_path, world=2):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / f"served-{folder.name}-{workers}"
    out.mkdir()
    mp.start_processes(litdata_rank, args=(world, port, str(folder), workers, str(out)), nprocs=world,
                       start_method="spawn")
    return [np.load(out / f"rank{rank}.npy") for rank in range(world)]


def test_litdata_on_two_ranks_serves_each_rank_its_rows_of_every_step(built, tmp_path):
    stream = injc.open_stream(built)
    expected = [np.stack([stream.batch(k)[rank * 2:(rank + 1) * 2] for k in range(40)]) for rank in range(2)]
    for workers in (0, 2):
        export(built, "litdata", tmp_path / f"ranks-{workers}", num_workers=workers, num_ranks=2)
        assert verify_export(tmp_path / f"ranks-{workers}") == []
        served = rank_batches(tmp_path / f"ranks-{workers}", workers, tmp_path)
        assert all(np.array_equal(s, e) for s, e in zip(served, expected)), workers
    # the one-rank export read by two ranks: each rank reads a contiguous half of the items
    export(built, "litdata", tmp_path / "one-rank")
    served = rank_batches(tmp_path / "one-rank", 0, tmp_path)
    assert sum(np.array_equal(served[0][k], expected[0][k]) for k in range(40)) <= 2


def nanogpt_train_loop(get_batch, model, accumulation, max_iters, master_process, eval_interval, eval_iters):
    """nanoGPT's train.py loop, its calls and their order as it makes them: one prefetch; each iteration, on the
    master process every eval_interval iterations, estimate_loss() (under no_grad, eval mode, eval_iters batches of
    'train' then of 'val'); then a forward pass per micro-step, each followed by the next fetch, then backward.
    Runs max_iters + 1 iterations, as nanoGPT's `if iter_num > max_iters: break` does. Returns the trained (x, y)
    per (iteration, micro-step)."""

    @torch.no_grad()
    def estimate_loss():
        model.eval()
        for split in ("train", "val"):
            for _ in range(eval_iters):
                x, y = get_batch(split)
                torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        model.train()

    trained, iter_num = {}, 0
    x, y = get_batch("train")
    while True:
        if iter_num % eval_interval == 0 and master_process:
            estimate_loss()
        for micro_step in range(accumulation):
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()) / accumulation
            trained[(iter_num, micro_step)] = (x, y)
            x, y = get_batch("train")
            loss.backward()
        iter_num += 1
        if iter_num > max_iters:
            break
    return trained


def test_nanogpt_drop_in_survives_nanogpts_own_loop_with_evaluation_on_every_rank(built, tmp_path, monkeypatch, capfd):
    """Two ranks (RANK/WORLD_SIZE as torchrun sets them), rank 0 alone evaluating every 5 iterations with 7 batches
    per split, in a build without a held-out tail (no val.bin): every rank trains exactly its rows of every step."""
    from injc.shards.nanogpt import StepBatches

    stream = injc.open_stream(built)
    export(built, "nanogpt", tmp_path / "nano")
    assert verify_export(tmp_path / "nano") == [] and not (tmp_path / "nano" / "val.bin").exists()
    world, micro = 2, 1  # 4 rows per step = 2 ranks × 2 accumulation steps × 1 row
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        batches = StepBatches(tmp_path / "nano", seq_len=64, rows_per_step=4, micro_batch_size=micro)
        model = torch.nn.Sequential(torch.nn.Embedding(400, 8), torch.nn.Linear(8, 400))
        trained = nanogpt_train_loop(batches.get_batch, model, batches.gradient_accumulation_steps, max_iters=39,
                                     master_process=rank == 0, eval_interval=5, eval_iters=7)
        assert len(trained) == 80
        for (step, micro_step), (x, y) in trained.items():
            row = stream.batch(step)[micro_step * world + rank]
            assert x.shape == (1, 63) and x[0].tolist() == row[:-1].tolist() and y[0].tolist() == row[1:].tolist()
    assert "has no val.bin" in capfd.readouterr().err
    resumed = StepBatches(tmp_path / "nano", seq_len=64, rows_per_step=4, micro_batch_size=micro, ddp_rank=1,
                          ddp_world_size=world)
    resumed.start_at(17)
    assert resumed.get_batch("train")[0][0].tolist() == stream.batch(17)[1][:-1].tolist()


def test_datatrove_folder_dataset_reads_the_shards_as_they_are(built):
    from datatrove.utils.dataset import DatatroveFolderDataset

    stream = injc.open_stream(built)
    dataset = DatatroveFolderDataset(str(built.parent / "shards"), seq_len=63, filename_pattern="*.bin",
                                     token_size=2)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)
    served = steps_served([batch["input_ids"].numpy() for batch in loader], stream)
    assert len(served) == 40 and all(served)


def test_bad_exports_are_one_line_and_leave_nothing(built, tmp_path):
    assert_user_error(run_injc("export", built, "--to", "megatronn", "--out", tmp_path / "x"),
                      "--to must be one of olmo-core, megatron, litdata, nanogpt, got 'megatronn'",
                      "did you mean 'megatron'")
    assert_user_error(run_injc("export", built, "--to", "olmo-cor", "--out", tmp_path / "x"),
                      "did you mean 'olmo-core'")
    assert_user_error(run_injc("export", built, "--to", "olmo-core", "--out", tmp_path / "x"), "needs --seed")
    assert_user_error(run_injc("export", built, "--to", "nanogpt", "--num-workers", "2", "--out", tmp_path / "x"),
                      "--num-workers and --num-ranks are for --to litdata")
    assert_user_error(run_injc("export", built, "--to", "litdata", "--num-workers", "3", "--out", tmp_path / "x"),
                      "--num-workers 3 does not divide the 40 steps")
    (tmp_path / "taken").mkdir()
    assert_user_error(run_injc("export", built, "--to", "nanogpt", "--out", tmp_path / "taken"), "already exists")
    shard = built.parent / "shards" / "shard_00000.bin"
    flip_bit(shard, 10)
    assert_user_error(run_injc("export", built, "--to", "nanogpt", "--out", tmp_path / "x"),
                      "does not match its manifest")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.injc-partial"))


def test_verify_finds_a_changed_export_file(built, tmp_path):
    export(built, "nanogpt", tmp_path / "nano")
    flip_bit(tmp_path / "nano" / "train.bin", 0)
    result = run_injc("verify", tmp_path / "nano")
    assert result.returncode == 1 and "train.bin: sha256 differs" in result.stderr


def brute_force(stream_tokens, sequence):
    windows = np.lib.stride_tricks.sliding_window_view(stream_tokens, len(sequence))
    return np.flatnonzero((windows == np.asarray(sequence)).all(axis=1)).tolist()


def test_locate_finds_every_occurrence_across_block_edges_and_names_insertions(built, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    import injc.shards.locate as locate_module

    manifest = injc.load_manifest(built)
    stream = injc.open_stream(manifest)
    tokens = stream.tokens(0, len(stream))
    table = pq.read_table(manifest.insertions_path).to_pylist()
    canary = table[0]["tokens"][1:-1]  # a canary's own tokens, without the EOS wrappers
    common = tokens[100:102].tolist()  # two base tokens: occurs naturally, probably many times
    # blocks end 2 tokens into the canary's first copy, so that copy straddles a block edge
    monkeypatch.setattr(locate_module, "BLOCK_TOKENS", brute_force(tokens, canary)[0] + 2)
    export(built, "olmo-core", tmp_path / "olmo", seed=5)
    for sequence in (canary, common):
        found = locate_module.locate(manifest, np.array(sequence), tmp_path / "olmo")
        assert [f["offset"] for f in found] == brute_force(tokens, sequence)
        for f in found:
            covering = [r for r in table if r["offset"] <= f["offset"] and f["offset"] + len(sequence)
                        <= r["offset"] + r["length"]]
            assert f["kind"] == ("inserted" if covering else "natural")
            if covering:
                assert (f["experiment"], f["item"], f["repetition"]) == (
                    covering[0]["experiment"], covering[0]["item"], covering[0]["repetition"])
            file_rows = np.fromfile(tmp_path / "olmo" / f["file"], dtype=np.uint16).reshape(-1, 64)
            assert file_rows[f["file_row"]][f["col"]:f["col"] + len(sequence)].tolist() == list(sequence) or \
                f["col"] + len(sequence) > 64
        assert sequence is canary or any(f["kind"] == "natural" for f in found)
    assert len(locate_module.locate(manifest, np.array(canary))) == 3  # CANARIES: 3 repetitions


def test_locate_on_the_command_line(built):
    result = run_injc("locate", built, "--experiment", "canaries", "--item", "0")
    assert result.returncode == 0 and result.stdout.strip().endswith("3 occurrences: 3 inserted, 0 natural")
    assert_user_error(run_injc("locate", built, "--text", "a", "--tokens", "1"), "give one of --text")
    assert_user_error(run_injc("locate", built, "--tokens", "1,x"), "comma-separated integers")
    assert_user_error(run_injc("locate", built, "--experiment", "nope"), "no experiment 'nope'")


def test_locate_names_the_litdata_chunk_and_item_each_rank_reads_and_refuses_another_builds_export(built, tmp_path):
    """Item numbers checked against LitData itself: its dataset's item file_row holds the sequence at col."""
    from litdata import StreamingDataset, TokensLoader

    from injc.shards.locate import item_tokens, locate

    manifest = injc.load_manifest(built)
    export(built, "litdata", tmp_path / "lit", num_ranks=2)
    dataset = StreamingDataset(str(tmp_path / "lit"), item_loader=TokensLoader(block_size=64))
    ((_, canary),) = item_tokens(manifest, "canaries", 1)
    found = locate(manifest, canary, tmp_path / "lit")
    assert len(found) == 3
    for hit in found:
        assert dataset[hit["file_row"]].tolist()[hit["col"]:hit["col"] + len(canary)] == canary.tolist()
        assert hit["file"] == f"litdata chunk {hit['file_row'] // 2}"  # a chunk is one rank's 2 rows of a step
    plan = built.parent.parent / "plan.toml"
    injc.build(plan, tmp_path / "clean", clean=True, progress=False)
    export(tmp_path / "clean" / "manifest.json", "nanogpt", tmp_path / "other")
    result = run_injc("locate", built, "--experiment", "canaries", "--export", tmp_path / "other")
    assert_user_error(result, "was written from another build")


def test_locate_refuses_bad_token_lists_and_reports_empty_results_as_json(built):
    manifest = json.loads(built.read_text())
    vocab = manifest["layout"]["vocab_size"]
    for tokens, message in (("99999999999999999999999", "outside the build's vocabulary"),
                            ("-3", "outside the build's vocabulary"), (str(vocab), f"ids 0 to {vocab - 1}"),
                            ("1,,2", "has an empty item"), ("1,x", "comma-separated integers")):
        assert_user_error(run_injc("locate", built, "--tokens", tokens), message)
    result = run_injc("locate", built, "--tokens", f"{vocab - 1},{vocab - 1},{vocab - 1},0", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["occurrences"] == []
    assert json.loads(result.stdout)["inserted"] == 0 == json.loads(result.stdout)["natural"]


def test_locate_text_searches_the_mid_document_form_too(built):
    from tokenizers import Tokenizer

    manifest = injc.load_manifest(built)
    tokenizer = Tokenizer.from_file(str(manifest.root / manifest.data["tokenizer"]["path"]))
    tokens = injc.open_stream(built).tokens(0, manifest.layout.total_tokens)
    result = run_injc("locate", built, "--text", "model reads", "--json")
    report = json.loads(result.stdout)
    assert [q["query_text"] for q in report["queries"]] == ["model reads", " model reads"]
    for form in ("model reads", " model reads"):
        expected = brute_force(tokens, tokenizer.encode(form, add_special_tokens=False).ids)
        assert [o["offset"] for o in report["occurrences"] if o["query_text"] == form] == expected
    assert any(o["query_text"] == " model reads" for o in report["occurrences"])


def test_export_records_hash_the_row_map_and_survive_a_move(built, tmp_path):
    import shutil

    export(built, "litdata", tmp_path / "lit", num_workers=2)
    rows = np.load(tmp_path / "lit" / "rows.npy")
    rows[[0, 1]] = rows[[1, 0]]
    np.save(tmp_path / "lit" / "rows.npy", rows)
    assert verify_export(tmp_path / "lit") == ["rows.npy: sha256 differs from export.json"]
    assert_user_error(run_injc("export", built, "--to", "nanogpt", "--seed", "3", "--out", tmp_path / "x"),
                      "--seed has no effect on --to nanogpt")
    assert_user_error(run_injc("export", built, "--to", "litdata", "--micro-batch-size", "2", "--out", tmp_path / "x"),
                      "--micro-batch-size is for --to litdata with --seed")
    assert_user_error(run_injc("export", built, "--to", "litdata", "--seed", "42", "--micro-batch-size", "3",
                               "--out", tmp_path / "x"), "does not divide the batch of 4 rows")
    export(built, "nanogpt", tmp_path / "nano")
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(built.parent, moved / "build")  # the build and the export, moved together
    shutil.move(tmp_path / "nano", moved / "nano")
    assert verify_export(moved / "nano") == []


def test_litgpt_pretrain_with_its_own_litdata_defaults_trains_on_every_step_in_order(built, tmp_path):
    """`litgpt pretrain` through its CLI, its LitData data module at its defaults (shuffle with seed 42, 8 loader
    workers), 2 micro-batches a step: every row its forward passes took is the manifest's, in step order, over all
    40 steps (tests/shards/litgpt_recording.py records them). The unshuffled export under the same command is not
    step-exact."""
    import subprocess
    import sys

    import yaml

    stream = injc.open_stream(built)
    export(built, "litdata", tmp_path / "shuffled", seed=42, num_workers=8, micro_batch=2)
    assert verify_export(tmp_path / "shuffled") == []
    export(built, "litdata", tmp_path / "plain")
    model = {"name": "tiny", "block_size": 63, "vocab_size": 400, "padded_vocab_size": 400, "n_layer": 1,
             "n_head": 2, "n_embd": 16, "rotary_percentage": 1.0, "parallel_residual": False, "bias": False,
             "norm_class_name": "RMSNorm", "mlp_class_name": "LLaMAMLP", "intermediate_size": 32}
    consumed = {}
    for name in ("shuffled", "plain"):
        config = {"model_name": "tiny", "model_config": model, "out_dir": str(tmp_path / f"run-{name}"),
                  "precision": "32-true", "devices": 1, "logger_name": "csv",
                  "data": {"class_path": "litgpt.data.LitData", "init_args": {"data_path": str(tmp_path / name)}},
                  "train": {"global_batch_size": 4, "micro_batch_size": 2, "max_tokens": 40 * 4 * 63,
                            "save_interval": None, "lr_warmup_steps": 0},
                  "eval": {"max_iters": 2}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        record = tmp_path / f"{name}.jsonl"
        result = subprocess.run([sys.executable, str(Path(__file__).parent / "litgpt_recording.py"), "pretrain",
                                 "--config", str(tmp_path / f"{name}.yaml")], capture_output=True, text=True,
                                env={**os.environ, "INJC_RECORD": str(record)}, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        consumed[name] = np.array([json.loads(line) for line in record.read_text().splitlines()])
    expected = np.stack([stream.batch(k)[:, :63] for k in range(40)]).reshape(-1, 63)
    assert consumed["shuffled"].shape == expected.shape and np.array_equal(consumed["shuffled"], expected)
    steps = consumed["plain"].reshape(40, 4, 63)
    assert sum(np.array_equal(steps[k], expected.reshape(40, 4, 63)[k]) for k in range(40)) <= 2
