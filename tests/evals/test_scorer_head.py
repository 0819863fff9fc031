"""The scorer runs a model's body once per batch and its output head only at the scored positions, a chunk at a time
(Scorer._losses_at); a model that transforms its logits after the head is scored from its whole logits instead. Both
must give what log_softmax of the model's own logits gives, computed here one sequence at a time."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

from injc.evals.model import Scorer  # noqa: E402

VOCAB = 2 ** 16  # 256 positions per chunk on a CPU (2^24 logits): the long batches below take several chunks
EOS = 0


def litgpt_checkpoint(folder, **config):
    from litgpt import Config
    from litgpt.model import GPT
    from litgpt.utils import save_config

    config = Config(block_size=128, vocab_size=VOCAB, padded_vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=32,
                    **config)
    torch.manual_seed(0)
    model = GPT(config)
    for parameter in model.parameters():  # logits of a few nats, so that soft-capping at 1.5 changes them
        torch.nn.init.normal_(parameter, std=0.5)
    folder.mkdir()
    torch.save(model.state_dict(), folder / "lit_model.pth")
    save_config(config, folder)
    return model.eval()


def sequences_and_starts():
    rng = np.random.default_rng(1)
    lengths = [3, 5, 40, 41, 90, 120, 129, 200] * 3  # 200 tokens: the scorer keeps the context's last 129
    sequences = [rng.integers(1, VOCAB, length) for length in lengths]
    return sequences, [int(rng.integers(1, length)) for length in lengths]


def expected_losses(logits_of, sequences, starts, block=128):
    """Each sequence alone through the model, cut to its context's last block + 1 tokens: -log_softmax at the
    tokens from `start` on (the ones cut off are not scored)."""
    expected = []
    for sequence, start in zip(sequences, starts):
        kept = sequence[-(block + 1):]
        start = max(start - (len(sequence) - len(kept)), 1)
        with torch.no_grad():
            logprobs = torch.log_softmax(logits_of(torch.tensor(kept[None, :-1])).float()[0], dim=-1)
        expected.append(np.array([-logprobs[i - 1, kept[i]].item() for i in range(start, len(kept))]))
    return expected


def test_the_head_sees_only_the_scored_positions_and_the_losses_are_log_softmax_of_the_logits(tmp_path):
    model = litgpt_checkpoint(tmp_path / "model")
    scorer = Scorer(tmp_path / "model", EOS, "cpu", batch_size=8)
    assert scorer.head_alone
    rows_seen = []
    scorer.backend.output_head().register_forward_hook(
        lambda module, args, output: rows_seen.append(output.shape[:-1].numel()))
    sequences, starts = sequences_and_starts()
    got = scorer.token_losses(sequences, starts)
    expected = expected_losses(model, sequences, starts)
    assert [len(g) for g in got] == [len(e) for e in expected]
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(expected), rtol=1e-5, atol=1e-5)
    # chunks of at most 256 scored positions (and the model's own forward, whose head is handed none): no padded
    # position, none before a start; 3 batches of 8, the longest in several chunks
    assert sum(rows_seen) == sum(len(e) for e in expected)
    assert max(rows_seen) <= 2 ** 24 // VOCAB and sum(rows > 0 for rows in rows_seen) > 3


def test_a_model_that_soft_caps_its_logits_is_scored_from_its_whole_logits(tmp_path):
    model = litgpt_checkpoint(tmp_path / "model", final_logit_softcapping=1.5)
    scorer = Scorer(tmp_path / "model", EOS, "cpu", batch_size=8)
    assert not scorer.head_alone
    sequences, starts = sequences_and_starts()
    expected = expected_losses(model, sequences, starts)
    with torch.no_grad():
        uncapped = expected_losses(lambda tokens: model.lm_head(hidden_states(model, tokens)), sequences, starts)
    assert np.abs(np.concatenate(uncapped) - np.concatenate(expected)).max() > 0.1  # the capping matters here
    np.testing.assert_allclose(np.concatenate(scorer.token_losses(sequences, starts)), np.concatenate(expected),
                               rtol=1e-5, atol=1e-5)


def hidden_states(model, tokens):
    caught = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: caught.append(args[0]))
    model(tokens)
    handle.remove()
    return caught[0]


def test_a_transformers_model_that_scales_its_logits_is_scored_from_its_whole_logits(tmp_path):
    """Granite divides its logits by `logits_scaling` after the head, in transformers' own forward."""
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(0)
    model = GraniteForCausalLM(GraniteConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                             max_position_embeddings=128, logits_scaling=4.0)).eval()
    model.save_pretrained(tmp_path / "granite")
    scorer = Scorer(tmp_path / "granite", EOS, "cpu", batch_size=8)
    assert not scorer.head_alone
    sequences, starts = sequences_and_starts()
    expected = expected_losses(lambda tokens: model(input_ids=tokens).logits, sequences, starts)
    np.testing.assert_allclose(np.concatenate(scorer.token_losses(sequences, starts)), np.concatenate(expected),
                               rtol=1e-5, atol=1e-5)


def test_the_in_place_cross_entropy_is_log_sum_exp_minus_the_targets_logit_even_for_huge_logits():
    from injc.evals.model import cross_entropy_in_place

    rng = np.random.default_rng(2)
    logits = rng.normal(0, 30, (5, 300)) + np.array([[0], [1000], [-1000], [90], [0]])
    targets = rng.integers(0, 300, 5)
    top = logits.max(1, keepdims=True)  # float64, written out: log Σ exp(x − max) + max − x[target]
    expected = np.log(np.exp(logits - top).sum(1)) + top[:, 0] - logits[np.arange(5), targets]
    got = cross_entropy_in_place(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-4)
