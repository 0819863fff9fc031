"""A LitGPT checkpoint and its Hugging Face conversion give the same report in every eval kind: the HF folder is
scored by transformers (AutoModelForCausalLM) on the build's token ids, the checkpoint by LitGPT."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")
pytest.importorskip("transformers")

from injc.evals.model import Scorer  # noqa: E402
from injc.evals.report import evaluate  # noqa: E402
from injc.train.hf import HF, checkpoint_format, convert  # noqa: E402


def leaves(tree, path=()):
    """(path, value) of every number, string and None in a JSON tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, (*path, key))
    elif isinstance(tree, list):
        yield (*path, "len"), len(tree)
        for index, value in enumerate(tree):
            yield from leaves(value, (*path, index))
    else:
        yield path, tree


def differences(expected: dict, got: dict, tolerance: float = 1e-4) -> list:
    expected, got = dict(leaves(expected)), dict(leaves(got))
    found = [("missing or extra", key) for key in set(expected) ^ set(got)]
    for key in set(expected) & set(got):
        a, b = expected[key], got[key]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if numbers and not math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance) or not numbers and a != b:
            found.append((key, a, b))
    return found


@pytest.fixture(scope="module")
def converted(trained, tmp_path_factory):
    root, _ = trained
    return convert(root / "run" / "final", "hf", tmp_path_factory.mktemp("hf") / "hf")


def test_the_hf_conversion_gives_the_same_report_in_every_eval_kind(trained, converted, tmp_path):
    root, report = trained
    folder = converted
    assert checkpoint_format(folder) == HF
    hf_report = evaluate(root / "out" / "manifest.json", [folder], tmp_path / "report", progress=False,
                         batch_size=5)
    kinds = {e["kind"] for e in report["experiments"].values()}
    assert {"canaries", "contamination", "knowledge", "poisoning", "math", "forgetting", "gaussian-watermark",
            "verbatim-removal", "iid", "texts"} <= kinds
    assert hf_report["checkpoint"] == str(folder) and hf_report["steps_done"] == report["steps_done"]
    assert hf_report["warnings"] == []  # train_state.json travelled with the conversion
    found = differences({k: v for k, v in report.items() if k != "checkpoint"},
                        {k: v for k, v in hf_report.items() if k != "checkpoint"})
    assert found == [], found[:10]


def test_greedy_decoding_is_the_same_in_both_formats_and_stops_after_the_stop_token(trained, converted):
    """Greedy continuations from transformers' KV cache (HF) and LitGPT's generate agree with an argmax loop
    written here; with a stop token, both end right after its first occurrence, keeping it."""
    from transformers import AutoModelForCausalLM

    root, _ = trained
    eos = 0
    lit, hf = Scorer(root / "run" / "final", eos), Scorer(converted, eos)
    prompt = np.r_[eos, np.arange(5, 30)]
    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    tokens = torch.from_numpy(prompt)[None]
    with torch.no_grad():
        for _ in range(12):
            tokens = torch.cat([tokens, model(input_ids=tokens).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = tokens[0, len(prompt):].numpy()
    assert np.array_equal(hf.greedy(prompt, 12), expected) and np.array_equal(lit.greedy(prompt, 12), expected)
    stop = int(expected[4])
    first = int(np.flatnonzero(expected == stop)[0])
    for scorer in (hf, lit):
        assert np.array_equal(scorer.greedy(prompt, 12, stop=stop), expected[:first + 1])


def test_verbatim_candidates_are_the_same_windows_in_both_formats(trained, converted, tmp_path):
    """The batched greedy scan (`injc verbatim-candidates`) finds the same windows with the HF folder as with the
    LitGPT checkpoint, and with both it finds some (short windows the trained model completes)."""
    from injc.evals.verbatim_candidates import candidates

    root, _ = trained
    manifest = root / "out" / "manifest.json"
    found = [candidates(manifest, folder, tmp_path / f"{name}.jsonl", prefix=4, suffix=2, max_windows=400,
                        progress=False) for name, folder in (("lit", root / "run" / "final"), ("hf", converted))]
    assert found[0] and found[0] == found[1]
