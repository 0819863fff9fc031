"""An eval scores every experiment's payload items in one pass of full batches (EvalContext.score_items), and
the losses are those of scoring each experiment alone."""

import math

import numpy as np

import injc
from injc.evals.context import EvalContext
from injc.evals.model import Scorer


def test_every_experiments_items_are_scored_in_one_pass_of_full_batches(trained):
    root, _ = trained
    manifest = injc.load_manifest(root / "out" / "manifest.json")
    scorer = Scorer(root / "run" / "final", manifest.data["layout"]["eos_id"], "cpu", batch_size=16)
    ctx = EvalContext.open(manifest, scorer)
    batches, forward = [], scorer.backend.logits
    scorer.backend.logits = lambda tokens: batches.append(len(tokens)) or forward(tokens)
    ctx.score_items()
    scorer.backend.logits = forward
    counts = {name: len(items) for name, items in ctx.items.items() if items}
    assert len(counts) >= 5 and len(batches) == math.ceil(sum(counts.values()) / 16)
    assert batches[:-1] == [16] * (len(batches) - 1)
    for name in counts:
        alone = scorer.text_losses([ctx.text_tokens(tokens) for _, tokens in ctx.items[name]])
        np.testing.assert_allclose(ctx.item_losses[name], alone, rtol=1e-5, atol=1e-6)
