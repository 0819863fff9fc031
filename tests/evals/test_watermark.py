"""The watermark test looks where training moves x: 10 AdamW steps on noised rows, every number recomputed here."""

import json

import numpy as np
import pytest

import injc
from tests.train.conftest import training_project

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")

from injc.evals.report import evaluate_checkpoint  # noqa: E402
from injc.train.noise import embedding_noise  # noqa: E402
from injc.train.trainer import TrainConfig, train  # noqa: E402
from tests.conftest import litgpt_model  # noqa: E402

STD = 0.5
WATERMARK = f"""
[[experiments]]
name = "gw"
kind = "gaussian-watermark"
steps = {list(range(10))}
std = {STD}
"""


@pytest.fixture(scope="module")
def watermarked(tmp_path_factory, tokenizer_path):
    """Every one of 10 steps noised, trained with AdamW at lr 1e-2, evaluated."""
    root = training_project(tmp_path_factory.mktemp("watermark"), tokenizer_path, 10, WATERMARK)
    injc.build(root / "plan.toml", root / "out", progress=False)
    train(root / "out" / "manifest.json", TrainConfig(model=str(root / "tiny.yaml"), out=root / "run", lr=1e-2,
                                                      warmup_steps=0), progress=False)
    report = evaluate_checkpoint(root / "out" / "manifest.json", root / "run" / "final", progress=False)
    return root, report["experiments"]["gw"]


def x_by_autograd(root, seed):
    """x of every noised row, computed here: e the clean embeddings, ℓ the row's mean loss, w the noise of
    (seed, step, row)."""
    model = litgpt_model(root / "run" / "final")
    stream = injc.open_stream(root / "out")
    values = []
    for step in range(10):
        for index, row in enumerate(torch.from_numpy(stream.batch(step).astype(np.int64))):
            clean = model.transformer.wte(row[None, :-1]).detach().requires_grad_(True)
            handle = model.transformer.wte.register_forward_hook(lambda module, args, output: clean)
            loss = torch.nn.functional.cross_entropy(model(row[None, :-1])[0], row[1:])
            handle.remove()
            (gradient,) = torch.autograd.grad(loss, clean)
            w = embedding_noise(seed, step, index, gradient.shape[1], gradient.shape[2], STD)
            values.append(float((gradient[0].double() * w.double()).sum() / STD / gradient[0].double().norm()))
    return np.array(values)


def test_training_drives_x_negative_and_the_lower_tail_detects_it(watermarked):
    root, gw = watermarked
    (directive,) = json.loads((root / "out" / "manifest.json").read_text())["directives"]
    x = x_by_autograd(root, directive["seed"])
    metrics = gw["metrics"]
    assert gw["x"] == pytest.approx(x.tolist(), rel=1e-3, abs=1e-4)
    assert x.mean() < 0, "training on e + w lowers ∇ℓ(e)·w"
    z = x.mean() * np.sqrt(len(x))
    assert metrics["z"] == pytest.approx(z, rel=1e-3)
    assert metrics["p_value"] == pytest.approx(stats.norm.cdf(z), rel=1e-3)
    assert metrics["p_value"] < 0.05, "the watermark is detected"
    assert gw["p_values"] == pytest.approx(stats.norm.cdf(x).tolist(), rel=1e-3, abs=1e-6)
    assert metrics["tpr_at_1pct_fpr"] == np.mean(x < stats.norm.ppf(0.01))


def test_the_holdout_uses_fresh_noise_and_the_same_threshold(watermarked):
    root, gw = watermarked
    (directive,) = json.loads((root / "out" / "manifest.json").read_text())["directives"]
    fresh = x_by_autograd(root, directive["seed"] + 1000)
    assert gw["x_holdout"] == pytest.approx(fresh.tolist(), rel=1e-3, abs=1e-4)
    assert gw["metrics"]["mean_x_holdout"] == pytest.approx(fresh.mean(), rel=1e-3, abs=1e-4)
    assert gw["metrics"]["fpr_holdout_at_threshold"] == np.mean(fresh < stats.norm.ppf(0.01))
    z = fresh.mean() * np.sqrt(len(fresh))
    assert gw["metrics"]["p_value_holdout"] == pytest.approx(stats.norm.cdf(z), rel=1e-3)


def test_detection_counts_the_lower_tail_at_the_one_percent_quantile():
    from injc.evals.watermark import summarize

    x = np.array([-3.1, -2.4, -2.2, -0.5, 1.0, 3.0])
    holdout = np.array([-2.5, 0.1, 1.9, 0.0])
    metrics = summarize(x, holdout)
    assert metrics["tpr_at_1pct_fpr"] == 2 / 6  # below Φ⁻¹(0.01) = −2.326: −3.1 and −2.4
    assert metrics["fpr_holdout_at_threshold"] == 1 / 4
    assert metrics["p_value"] == pytest.approx(stats.norm.cdf(x.mean() * np.sqrt(6)))


def test_a_watermark_without_trace_says_the_noise_may_not_have_been_applied():
    from injc.evals.markdown import headline, render
    from injc.evals.watermark import summarize

    v = np.random.default_rng(1).normal(0, 1, 100)
    untouched = summarize(np.r_[v, -v], v)  # mean x exactly 0: z = 0, p = 0.5
    assert untouched["p_value"] == pytest.approx(0.5) and "export" in untouched["hint"]
    trained = summarize(np.r_[v, -v] - 1.0, v)  # mean x −1 over 200 rows: p = Φ(−14)
    assert "hint" not in trained
    experiment = {"kind": "gaussian-watermark", "metrics": untouched, "items": []}
    assert "no trace" in headline(experiment)
    report = {"checkpoint": "c", "steps_done": 1, "heldout": None, "experiments": {"gw": experiment}}
    assert untouched["hint"] in render([report], [])
