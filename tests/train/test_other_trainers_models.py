"""Models trained elsewhere, evaluated with injc: nanoGPT's ckpt.pt through `injc convert --to hf` (GPT-2), and an
OLMo-core model saved with OLMo-core's own HF converter (`save_hf_model`). Each is judged against a forward pass
computed here, from the trainer's own weights: nanoGPT's model.py math written out, OLMo-core's model itself."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from injc.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")
pytest.importorskip("transformers")

from injc.evals.model import Scorer  # noqa: E402
from tests.conftest import litgpt_model  # noqa: E402

F = torch.nn.functional
ROWS = np.random.default_rng(4).integers(0, 300, (3, 40))


def nanogpt_state(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=400, seed=0) -> tuple[dict, dict]:
    """Random weights under the names and shapes of nanoGPT's model.py with bias=False (its train.py default; the
    LM head tied to the token embedding), as torch.compile'd models save them (`_orig_mod.` prefix)."""
    g = torch.Generator().manual_seed(seed)
    w = {"transformer.wte.weight": torch.randn(vocab_size, n_embd, generator=g) * 0.2,
         "transformer.wpe.weight": torch.randn(block_size, n_embd, generator=g) * 0.2,
         "transformer.ln_f.weight": 1 + 0.1 * torch.randn(n_embd, generator=g)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        w |= {p + "ln_1.weight": 1 + 0.1 * torch.randn(n_embd, generator=g),
              p + "attn.c_attn.weight": torch.randn(3 * n_embd, n_embd, generator=g) * 0.1,
              p + "attn.c_proj.weight": torch.randn(n_embd, n_embd, generator=g) * 0.1,
              p + "ln_2.weight": 1 + 0.1 * torch.randn(n_embd, generator=g),
              p + "mlp.c_fc.weight": torch.randn(4 * n_embd, n_embd, generator=g) * 0.1,
              p + "mlp.c_proj.weight": torch.randn(n_embd, 4 * n_embd, generator=g) * 0.1}
    w["lm_head.weight"] = w["transformer.wte.weight"]
    args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=False,
                vocab_size=vocab_size, dropout=0.0)
    return w, args


def nanogpt_forward(w: dict, args: dict, idx: torch.Tensor) -> torch.Tensor:
    """nanoGPT's GPT.forward: token + position embeddings, pre-LN blocks (causal attention, exact-GELU MLP),
    final LayerNorm (eps 1e-5, no bias), tied head."""
    B, T = idx.shape
    C, H = args["n_embd"], args["n_head"]
    x = w["transformer.wte.weight"][idx] + w["transformer.wpe.weight"][:T]
    for i in range(args["n_layer"]):
        p = f"transformer.h.{i}."
        h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], None, 1e-5)
        q, k, v = F.linear(h, w[p + "attn.c_attn.weight"]).split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, w[p + "attn.c_proj.weight"])
        h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], None, 1e-5)
        x = x + F.linear(F.gelu(F.linear(h, w[p + "mlp.c_fc.weight"])), w[p + "mlp.c_proj.weight"])
    return F.linear(F.layer_norm(x, (C,), w["transformer.ln_f.weight"], None, 1e-5), w["lm_head.weight"])


def token_losses(logits: torch.Tensor, rows) -> np.ndarray:
    targets = torch.as_tensor(rows)[:, 1:]
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none").numpy()


def test_a_nanogpt_checkpoint_converts_to_hf_and_is_scored_as_nanogpt_computes(built, tmp_path):
    weights, args = nanogpt_state()
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in weights.items()}, "optimizer": {}, "model_args": args,
                "iter_num": 10, "best_val_loss": torch.tensor(5.0), "config": {"batch_size": 4}}, tmp_path / "ckpt.pt")
    manifest = built / "out" / "manifest.json"
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "ckpt.pt"), "--to", "hf", "--out",
                                       str(tmp_path / "hf"), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    scorer = Scorer(tmp_path / "hf", eos_id=0)
    got = scorer.token_losses(list(ROWS), [1] * len(ROWS))
    with torch.no_grad():
        expected = token_losses(nanogpt_forward(weights, args, torch.as_tensor(ROWS)), ROWS)
    assert np.allclose(np.stack(got), expected, atol=1e-5)
    report = CliRunner().invoke(main, ["eval", str(manifest), "--checkpoint", str(tmp_path / "hf"), "--out",
                                       str(tmp_path / "report"), "--quiet"])
    assert report.exit_code == 0, report.output
    assert "canaries (texts): mean loss" in report.output
    refused = CliRunner().invoke(main, ["convert", str(tmp_path / "ckpt.pt"), "--to", "litgpt", "--out",
                                        str(tmp_path / "lit")])
    assert refused.exit_code == 2 and "LitGPT has no GPT-2 architecture" in refused.output
    assert not (tmp_path / "lit").exists()


def test_an_olmo_core_model_saved_by_olmo_core_is_scored_and_continued_as_olmo_core_computes(built, tmp_path):
    from olmo_core.nn.hf.checkpoint import save_hf_model
    from olmo_core.nn.transformer import TransformerConfig

    torch.manual_seed(0)
    model = TransformerConfig.olmo2_14M(vocab_size=400, n_layers=2).build(init_device="cpu")
    model.init_weights(device=torch.device("cpu"))
    save_hf_model(tmp_path / "olmo", model.state_dict(), model)
    assert json.loads((tmp_path / "olmo" / "config.json").read_text())["max_position_embeddings"] == -1
    with torch.no_grad():
        expected_logits = model.eval()(torch.as_tensor(ROWS))
    got = Scorer(tmp_path / "olmo", eos_id=0).token_losses(list(ROWS), [1] * len(ROWS))
    assert np.allclose(np.stack(got), token_losses(expected_logits, ROWS), atol=1e-5)

    result = CliRunner().invoke(main, ["train", str(built / "out" / "manifest.json"), "--init", str(tmp_path / "olmo"),
                                       "--out", str(tmp_path / "run"), "--steps", "1", "--lr", "0", "--min-lr", "0",
                                       "--weight-decay", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        continued = litgpt_model(tmp_path / "run" / "final")(torch.as_tensor(ROWS))
    assert torch.allclose(continued, expected_logits, atol=1e-5)
