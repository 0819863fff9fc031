import numpy as np

from injc.shards.layout import Layout


def test_locate_matches_the_contract_formulas():
    layout = Layout(seq_len=8, batch_size=3, steps=5)
    offsets = np.arange(layout.total_tokens)
    step, row, col = layout.locate(offsets)
    assert (step == offsets // 24).all()
    assert (row == (offsets // 8) % 3).all()
    assert (col == offsets % 8).all()
    assert (layout.offset(step, row, col) == offsets).all()


def test_scalar_round_trip_and_totals():
    layout = Layout(seq_len=4096, batch_size=512, steps=100_000)  # the paper's run
    assert layout.total_tokens == 209_715_200_000
    g = 123_456_789_012
    assert layout.offset(*layout.locate(g)) == g
    assert layout.locate(layout.tokens_per_step * 7 + 4096 * 5 + 11) == (7, 5, 11)
