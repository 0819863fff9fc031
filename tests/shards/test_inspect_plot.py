"""`injc inspect --plot` at the scale of real runs: 10^5 steps with a watermark every 10 steps stays a figure of a
few hundred artists, whose bars and noise band are the per-run means computed here from insertions.parquet."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import injc
from injc.shards.inspect import PLOT_BINS, bin_means, inspect, step_bins

STEPS, SEQ_LEN = 100_000, 16


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, tokenizer_path):
    """10^5 steps of one 16-token row from a token corpus (no tokenizing), pinned payloads and a watermark."""
    root = tmp_path_factory.mktemp("long")
    (root / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    tokens = np.random.default_rng(0).integers(1, 300, STEPS * SEQ_LEN + 100_000).astype(np.uint16)
    tokens[::97] = 0  # document separators (EOS)
    tokens.tofile(root / "corpus.bin")
    (root / "pins.jsonl").write_text("".join(json.dumps({"tokens": [5, 6, 7, 8 + i % 3]}) + "\n" for i in range(50)))
    (root / "plan.toml").write_text(
        f"[layout]\nseq_len = {SEQ_LEN}\nbatch_size = 1\nsteps = {STEPS}\nseed = 3\n"
        '[tokenizer]\npath = "tokenizer.json"\n[corpus]\npaths = ["corpus.bin"]\nformat = "tokens"\ndtype = "uint16"\n'
        '[[experiments]]\nname = "pins"\nkind = "tokens"\nfile = "pins.jsonl"\nrepetitions = 20\n'
        '[[experiments]]\nname = "gw"\nkind = "gaussian-watermark"\nevery_steps = 10\n')
    return injc.build(root / "plan.toml", root / "out", progress=False).manifest_path


def test_a_long_run_plots_binned_with_few_artists_and_the_bins_are_the_per_run_means(long_run):
    import matplotlib.pyplot as plt

    report = inspect(long_run)
    figure = report.figure()
    try:
        assert len(figure.findobj()) < 400  # a line per noised step would be 10,000
        main, band = figure.axes
        assert "plan.toml" in main.get_title() and "runs of 250 steps" in main.get_title()
        # independent binning: runs of exactly STEPS / PLOT_BINS steps, tokens summed from the insertions table
        width = STEPS // PLOT_BINS
        table = pq.read_table(long_run.parent / "insertions.parquet", columns=["step", "length"]).to_pydict()
        per_step = np.zeros(STEPS)
        np.add.at(per_step, table["step"], table["length"])
        expected = per_step.reshape(PLOT_BINS, width).mean(axis=1) / SEQ_LEN * 100
        assert np.allclose(bin_means(per_step, step_bins(STEPS, PLOT_BINS)) / SEQ_LEN * 100, expected)
        (stack,) = main.collections
        top = stack.get_paths()[0].vertices[:, 1].max()
        assert top == pytest.approx(expected.max())
        (noise,) = band.patches
        values, edges = noise.get_data()[:2]
        assert np.array_equal(edges, np.arange(0, STEPS + 1, width))
        assert np.allclose(values, 10.0)  # every 10th step noised: 25 of each run of 250
        assert main.get_legend() is None and figure.legends  # the legend sits outside the data
    finally:
        plt.close(figure)


def test_text_view_bins_are_the_plot_bins(long_run):
    text = inspect(long_run).to_text()
    assert "steps       0–4,999" in text and "steps  95,000–99,999" in text


def test_a_watermark_is_listed_as_embedding_noise_not_as_a_random_placement(long_run):
    (line,) = [line for line in inspect(long_run).to_text().splitlines() if line.startswith("gw ")]
    assert "embedding noise" in line and "random" not in line
