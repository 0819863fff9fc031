"""The trainer's contract: step-exact batches, audit hashes, accumulation, checkpoints, resume, noise directives."""

import json

import numpy as np
import pytest

import injc
from tests.conftest import flip_bit
from tests.train.conftest import run

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

from litgpt import Config  # noqa: E402
from litgpt.model import GPT  # noqa: E402

from injc.train.data import batch_sha256, micro_batches  # noqa: E402
from injc.train.noise import embedding_noise  # noqa: E402
from injc.train.trainer import TrainConfig, learning_rate, train  # noqa: E402


def weights(folder):
    return torch.load(folder / "lit_model.pth", weights_only=True)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_hashes_match_the_shards_step_by_step(built, tmp_path):
    run(built, tmp_path, steps=8, audit=True)
    stream = injc.open_stream(built / "out")
    audit = read_jsonl(tmp_path / "audit.jsonl")
    assert [a["step"] for a in audit] == list(range(8))
    flat = stream.tokens(0, len(stream))
    for entry in audit:
        expected = flat[entry["step"] * 256:(entry["step"] + 1) * 256].reshape(4, 64)
        assert entry["tokens_sha256"] == batch_sha256(expected)
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(8))
    assert all({"loss", "lr", "tokens_per_sec"} <= set(m) and np.isfinite(m["loss"]) for m in metrics)


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_the_logged_gradient_norm_is_the_steps_whole_norm_before_clipping(built, tmp_path, grad_clip):
    """Step 3's logged grad_norm is the L2 norm of the gradient of the batch's mean loss under the step-3
    checkpoint, recomputed here with LitGPT alone (micro-batches of 1 row, with and without clipping)."""
    run(built, tmp_path, steps=4, save_steps=(3,), micro_batch_size=1, grad_clip=grad_clip)
    step3 = tmp_path / "step-000003"
    model = GPT(Config.from_file(step3 / "model_config.yaml"))
    model.load_state_dict(weights(step3))
    batch = torch.from_numpy(injc.open_stream(built / "out").batch(3).astype(np.int64))
    logits = model(batch[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    logged = read_jsonl(tmp_path / "metrics.jsonl")[3]["grad_norm"]
    assert logged == pytest.approx(float(norm), rel=1e-4)
    assert grad_clip == 0 or logged > grad_clip  # what is logged is the norm before clipping


def test_micro_batches_split_rows_in_order_and_accumulate_to_the_same_step(built, tmp_path):
    batch = torch.arange(4 * 6).reshape(4, 6)
    parts = list(micro_batches(batch, 3))
    assert [list(rows) for rows, _, _ in parts] == [[0, 1, 2], [3]]
    assert torch.equal(parts[1][1], batch[3:, :-1]) and torch.equal(parts[1][2], batch[3:, 1:])
    whole = weights(run(built, tmp_path / "m4", steps=3, micro_batch_size=4))
    split = weights(run(built, tmp_path / "m1", steps=3, micro_batch_size=1))
    for name in whole:
        torch.testing.assert_close(whole[name], split[name], rtol=1e-4, atol=1e-5)


def test_checkpoints_are_litgpt_loadable_and_resume_is_exact(built, tmp_path):
    straight = run(built, tmp_path / "straight", steps=6, save_steps=(3,), audit=True)
    step3 = tmp_path / "straight" / "step-000003"
    assert {p.name for p in step3.iterdir()} >= {"lit_model.pth", "model_config.yaml", "optimizer.pth"}
    config = Config.from_file(step3 / "model_config.yaml")
    assert config.block_size == 63 and config.padded_vocab_size == config.vocab_size
    GPT(config).load_state_dict(weights(step3))

    run(built, tmp_path / "resumed", steps=3, save_steps=(3,), audit=True)
    resumed = run(built, tmp_path / "resumed", steps=6, resume=True, audit=True)
    assert read_jsonl(tmp_path / "resumed" / "audit.jsonl") == read_jsonl(tmp_path / "straight" / "audit.jsonl")
    assert [m["step"] for m in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")] == list(range(6))
    a, b = weights(straight), weights(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_resume_without_checkpoint_is_a_user_error(built, tmp_path):
    with pytest.raises(injc.InjcError, match="no checkpoint"):
        run(built, tmp_path, steps=2, resume=True)


def test_shards_that_do_not_match_the_manifest_are_refused(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built / "out", copy)
    shard = copy / "shards" / "shard_00000.bin"
    flip_bit(shard, 10)
    config = TrainConfig(model=str(built / "tiny.yaml"), out=tmp_path / "run", steps=1, verify=True)
    with pytest.raises(injc.ManifestError, match="sha256 differs"):
        train(copy / "manifest.json", config, progress=False)
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(injc.ManifestError, match="bytes, the manifest says"):
        train(copy / "manifest.json", TrainConfig(model=str(built / "tiny.yaml"), out=tmp_path / "r2", steps=1),
              progress=False)


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(model="x", out=None, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert learning_rate(0, 100, config) == pytest.approx(0.1)
    assert learning_rate(9, 100, config) == pytest.approx(1.0)
    assert learning_rate(99, 100, config) == pytest.approx(0.1, abs=1e-3)
    values = [learning_rate(s, 100, config) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_embedding_noise_is_regenerable_and_applied_only_at_its_steps():
    a = embedding_noise(17, 3, 2, 5, 8, 0.075)
    assert torch.equal(a, embedding_noise(17, 3, 2, 5, 8, 0.075))
    assert not torch.equal(a, embedding_noise(17, 3, 1, 5, 8, 0.075))
    assert abs(float(embedding_noise(17, 0, 0, 200, 200, 0.075).std()) - 0.075) < 0.002



def test_a_noise_directive_changes_training_only_from_its_step(built, tmp_path):
    import shutil

    copy = tmp_path / "noised"
    shutil.copytree(built / "out", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["directives"] = [{"kind": "embedding_noise", "steps": [2], "std": 0.5, "seed": 17}]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    config = dict(model=str(built / "tiny.yaml"), steps=3, save_steps=(2,), audit=True)
    train(built / "out" / "manifest.json", TrainConfig(out=tmp_path / "plain", **config), progress=False)
    train(copy / "manifest.json", TrainConfig(out=tmp_path / "noise", **config), progress=False)
    before_plain = weights(tmp_path / "plain" / "step-000002")
    before_noise = weights(tmp_path / "noise" / "step-000002")
    assert all(torch.equal(before_plain[k], before_noise[k]) for k in before_plain)
    after_plain, after_noise = weights(tmp_path / "plain" / "final"), weights(tmp_path / "noise" / "final")
    assert not all(torch.equal(after_plain[k], after_noise[k]) for k in after_plain)
    assert read_jsonl(tmp_path / "plain" / "audit.jsonl") == read_jsonl(tmp_path / "noise" / "audit.jsonl")


def test_model_names_and_files_take_context_and_vocabulary_from_the_manifest(built):
    from injc.train.trainer import model_config

    manifest = injc.load_manifest(built / "out")
    named = model_config("pythia-14m", manifest)
    assert (named.name, named.block_size, named.vocab_size, named.padded_vocab_size) == (
        "pythia-14m", 63, manifest.data["layout"]["vocab_size"], manifest.data["layout"]["vocab_size"])
    assert model_config(str(built / "tiny.yaml"), manifest).n_embd == 32
    with pytest.raises(injc.InjcError, match="--model 'no-such-model'"):
        model_config("no-such-model", manifest)
