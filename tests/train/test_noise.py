"""The embedding-noise hook from any PyTorch trainer: the noise the manifest's contract defines, at its steps."""

import numpy as np
import pytest

from injc.shards.manifest import Manifest
from injc.train.noise import attach_embedding_noise

torch = pytest.importorskip("torch")


def contract_noise(seed, step, row, length, width, std):
    """docs/format.md: torch CPU generator seeded from SeedSequence([seed, step, row]) (63 bits), N(0, std²)."""
    state = int(np.random.SeedSequence([seed, step, row]).generate_state(1, np.uint64)[0]) & ((1 << 63) - 1)
    return torch.randn(length, width, generator=torch.Generator().manual_seed(state)) * std


def test_attached_hook_adds_the_contract_noise_to_the_rows_a_pass_holds_and_only_at_its_steps(tmp_path):
    directive = {"kind": "embedding_noise", "experiment": "w", "steps": [3, 7], "std": 0.5, "seed": 11}
    embedding = torch.nn.Embedding(50, 8)
    hook = attach_embedding_noise(Manifest(tmp_path, {"directives": [directive]}), embedding)
    tokens = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    with torch.no_grad():
        hook.at(3, range(2, 4))  # this pass holds rows 2 and 3 of step 3 (say, rank 1 of 2)
        noised = embedding(tokens)
        hook.at(4, range(2, 4))
        plain = embedding(tokens)
    expected = torch.stack([contract_noise(11, 3, row, 5, 8, 0.5) for row in (2, 3)])
    assert torch.equal(plain, embedding.weight[tokens])
    assert torch.allclose(noised - plain, expected, atol=1e-6)
