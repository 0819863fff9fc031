"""Scoring under bf16 autocast (`precision="bf16-mixed"`, the default on CUDA) against float32 on the same
checkpoint: close within the tolerances stated here, and not equal (bf16 really ran). On CPU everywhere; the same
tests run on CUDA where there is a GPU."""

import numpy as np
import pytest
import torch

import injc
from injc.evals.model import Scorer
from injc.evals.report import evaluate_checkpoint

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                   reason="no CUDA device here"))]
TOKEN_LOSS_TOLERANCE = 0.05
"""Per token, in nats (bf16 keeps 8 bits of mantissa; measured on this test's model on CPU: at most 0.019, 0.0045 on
average)."""
MEAN_LOSS_TOLERANCE = 0.005
"""A mean over many tokens (each experiment's mean_loss, the held-out loss), in nats: the per-token errors are not
all of one sign (measured: at most 0.0008)."""


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_token_losses_agree_with_float32(trained, device):
    root, _ = trained
    stream = injc.open_stream(root / "out" / "manifest.json")
    rows = [stream.batch(step)[row] for step in range(0, 40, 5) for row in range(2)]
    eos = stream.manifest.data["layout"]["eos_id"]
    losses = {precision: np.concatenate(Scorer(root / "run" / "final", eos, device, precision=precision)
                                        .token_losses(rows, [1] * len(rows)))
              for precision in ("32-true", "bf16-mixed")}
    difference = np.abs(losses["bf16-mixed"] - losses["32-true"])
    assert difference.max() < TOKEN_LOSS_TOLERANCE and difference.max() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_a_bf16_report_agrees_with_the_float32_report(trained, device):
    root, _ = trained
    eos = injc.load_manifest(root / "out" / "manifest.json").data["layout"]["eos_id"]
    reports = {precision: evaluate_checkpoint(root / "out" / "manifest.json",
                                              Scorer(root / "run" / "final", eos, device, precision=precision),
                                              progress=False)
               for precision in ("32-true", "bf16-mixed")}
    exact, half = reports["32-true"], reports["bf16-mixed"]
    assert (exact["precision"], half["precision"]) == ("32-true", "bf16-mixed")
    assert abs(half["heldout"]["loss"] - exact["heldout"]["loss"]) < MEAN_LOSS_TOLERANCE
    compared = []
    for name, experiment in exact["experiments"].items():
        ours, theirs = half["experiments"][name]["metrics"]["mean_loss"], experiment["metrics"]["mean_loss"]
        assert (ours is None) == (theirs is None), name  # a watermark inserts no tokens of its own: no mean loss
        if theirs is not None:
            compared.append(abs(ours - theirs))
    assert len(compared) >= 8 and max(compared) < MEAN_LOSS_TOLERANCE and max(compared) > 0
