"""Hugging Face folders in and out: tiny random GPT-NeoX, Llama and OLMo-2 models made here with transformers
(`save_pretrained`, nothing downloads), converted with LitGPT's converters, continued with `injc train --init`,
written by `injc train --hf` and `injc convert`; every conversion is judged by transformers' own forward pass."""

import json

import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from injc.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")
transformers = pytest.importorskip("transformers")

from injc.train.hf import HF, LITGPT, checkpoint_format, convert, hf_to_litgpt  # noqa: E402
from tests.conftest import litgpt_model  # noqa: E402
from tests.train.conftest import run  # noqa: E402

VOCAB, CONTEXT = 400, 64  # the build's tokenizer has fewer ids (369): TOKENS stay below 300
SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=CONTEXT)
ARCHITECTURES = {
    "gpt_neox": lambda **more: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        **{**SIZES, "rotary_pct": 0.25, "use_parallel_residual": True, **more})),
    "llama": lambda **more: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{**SIZES, "num_key_value_heads": 2, **more})),
    "olmo2": lambda **more: transformers.Olmo2ForCausalLM(transformers.Olmo2Config(
        **{**SIZES, "num_key_value_heads": 4, **more})),
}


def hf_folder(path, architecture: str, seed: int = 0, **more):
    torch.manual_seed(seed)
    ARCHITECTURES[architecture](**more).save_pretrained(path)
    return path


def hf_logits(folder, tokens):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=tokens).logits


TOKENS = torch.randint(0, 300, (3, CONTEXT - 1), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_litgpt_computes_what_transformers_computes_after_conversion_both_ways(architecture, tmp_path):
    from litgpt.model import GPT

    source = hf_folder(tmp_path / "hf", architecture)
    config, state = hf_to_litgpt(source)
    model = GPT(config)
    model.load_state_dict(state)
    with torch.no_grad():
        lit = model.eval()(TOKENS)
    expected = hf_logits(source, TOKENS)
    assert torch.allclose(lit, expected, atol=1e-5), (lit - expected).abs().max()

    lit_folder = convert(source, "litgpt", tmp_path / "lit")
    assert checkpoint_format(lit_folder) == LITGPT
    with torch.no_grad():
        assert torch.allclose(litgpt_model(lit_folder)(TOKENS), expected, atol=1e-5)
    back = convert(lit_folder, "hf", tmp_path / "back")
    assert checkpoint_format(back) == HF
    assert json.loads((back / "config.json").read_text())["model_type"] == architecture
    assert torch.allclose(hf_logits(back, TOKENS), expected, atol=1e-5)


@pytest.mark.parametrize("architecture", ["gpt_neox", "olmo2"])
def test_train_init_from_an_hf_folder_starts_from_exactly_its_weights(built, tmp_path, architecture):
    """One step at learning rate 0 leaves the weights as they were: the checkpoint then computes what transformers
    computes with the HF folder, so the trainer started from the converted model itself."""
    source = hf_folder(tmp_path / "hf", architecture, seed=3)
    result = CliRunner().invoke(main, ["train", str(built / "out" / "manifest.json"), "--init", str(source),
                                       "--out", str(tmp_path / "run"), "--steps", "1", "--lr", "0", "--min-lr", "0",
                                       "--weight-decay", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        trained = litgpt_model(tmp_path / "run" / "final")(TOKENS)
    assert torch.allclose(trained, hf_logits(source, TOKENS), atol=1e-5)
    state = json.loads((tmp_path / "run" / "final" / "train_state.json").read_text())
    assert state["init"] == str(source)


def test_train_hf_writes_every_checkpoint_as_a_folder_transformers_loads(built, tmp_path):
    final = run(built, tmp_path / "run", steps=4, save_steps=(2,), hf=True)
    for checkpoint in (tmp_path / "run" / "step-000002", final):
        folder = checkpoint / "hf"
        assert checkpoint_format(folder) == HF
        with torch.no_grad():
            assert torch.allclose(hf_logits(folder, TOKENS), litgpt_model(checkpoint)(TOKENS), atol=1e-5)
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        assert tokenizer.eos_token == "<|endoftext|>"
        eos = json.loads((built / "out" / "manifest.json").read_text())["layout"]["eos_id"]
        assert transformers.AutoConfig.from_pretrained(folder).eos_token_id == eos  # generation stops there
        assert transformers.GenerationConfig.from_pretrained(folder).eos_token_id == eos
        build_tokenizer = Tokenizer.from_file(str(built / "out" / "tokenizer.json"))
        assert tokenizer("the model reads").input_ids == build_tokenizer.encode("the model reads").ids
        assert json.loads((folder / "train_state.json").read_text())["steps_done"] in (2, 4)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(result):
    """The one error line of a refused command (a warning said before it, e.g. of a folder without injc's
    train_state.json, is not an error)."""
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("injc: warning: ")]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("injc: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_bad_model_folders_are_one_line_each_and_nothing_is_written(built, tmp_path):
    manifest = built / "out" / "manifest.json"
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "config.json").write_text("{}")  # a config without weights is not a model folder
    small_vocab = hf_folder(tmp_path / "small-vocab", "llama", vocab_size=300)
    short = hf_folder(tmp_path / "short", "llama", max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=VOCAB, n_positions=CONTEXT, n_embd=32, n_layer=1,
                                                         n_head=2)).save_pretrained(tmp_path / "gpt2")
    no_layers = hf_folder(tmp_path / "no-layers", "llama")
    config = json.loads((no_layers / "config.json").read_text())
    del config["num_hidden_layers"]
    (no_layers / "config.json").write_text(json.dumps(config))
    no_bias = tmp_path / "no-bias.yaml"  # GPT-NeoX's MLP without biases: transformers' GPT-NeoX always has them
    no_bias.write_text((built / "tiny.yaml").read_text().replace("bias: true", "bias: false"))
    cases = [
        (("eval", manifest, "--checkpoint", neither, "--out", tmp_path / "r1"), "neither a LitGPT checkpoint",
         tmp_path / "r1"),
        (("train", manifest, "--init", neither, "--out", tmp_path / "r2"), "neither a LitGPT checkpoint",
         tmp_path / "r2"),
        (("eval", manifest, "--checkpoint", small_vocab, "--out", tmp_path / "r3"), "300 embedding rows",
         tmp_path / "r3"),
        (("train", manifest, "--init", small_vocab, "--out", tmp_path / "r4"), "300 embedding rows", tmp_path / "r4"),
        (("eval", manifest, "--checkpoint", short, "--out", tmp_path / "r5"), "context 32", tmp_path / "r5"),
        (("train", manifest, "--init", short, "--out", tmp_path / "r6"), "context 32", tmp_path / "r6"),
        (("train", manifest, "--init", tmp_path / "gpt2", "--out", tmp_path / "r7"),
         "LitGPT converts GPTNeoXForCausalLM, LlamaForCausalLM, Olmo2ForCausalLM only", tmp_path / "r7"),
        (("convert", tmp_path / "gpt2", "--to", "litgpt", "--out", tmp_path / "r8"), "GPT2LMHeadModel",
         tmp_path / "r8"),
        (("convert", neither, "--to", "hf", "--out", tmp_path / "r9"), "neither a LitGPT checkpoint",
         tmp_path / "r9"),
        (("convert", tmp_path / "gpt2", "--to", "hf", "--out", tmp_path / "r10"), "already a Hugging Face folder",
         tmp_path / "r10"),
        (("train", manifest, "--model", no_bias, "--hf", "--out", tmp_path / "r11"), "no transformers counterpart",
         tmp_path / "r11"),
        (("train", manifest, "--init", no_layers, "--out", tmp_path / "r12"), "config.json has no 'num_hidden_layers'",
         tmp_path / "r12"),
        (("eval", manifest, "--checkpoint", no_layers, "--out", tmp_path / "r13"), "transformers cannot load it",
         tmp_path / "r13"),
    ]
    for args, message, out in cases:
        line = _one_error_line(_invoke(*args))
        assert message in line, (args, line)
        assert not out.exists(), args
    before = sorted(p.name for p in (tmp_path / "short").iterdir())
    line = _one_error_line(_invoke("convert", small_vocab, "--to", "litgpt", "--out", tmp_path / "short"))
    assert "exists and is not empty (--force replaces it)" in line
    assert sorted(p.name for p in (tmp_path / "short").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2", "neither", "no-bias.yaml", "no-layers", "short",
                                                           "small-vocab"]
