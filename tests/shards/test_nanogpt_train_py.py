"""The nanoGPT snippet of docs/trainers.md placed exactly where the docs say, in nanoGPT's own train.py, run as its
users run it (its configurator, its estimate_loss, its loop): every training batch is the manifest's step.

nanoGPT is not a package and its code is not ours to ship, so this test runs on a checkout the user names:
`INJC_NANOGPT_DIR=/path/to/nanoGPT python -m pytest tests/shards/test_nanogpt_train_py.py` (train.py, model.py and
configurator.py are copied from there into a temporary folder). Without it the test is skipped; the drop-in itself
is tested in CI inside a loop written as train.py's (tests/shards/test_exports.py)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import injc
from injc.shards.exports import export
from tests.shards.test_exports import built  # noqa: F401  (the fixture: 40 steps of 4 rows × 64 tokens)

NANOGPT = os.environ.get("INJC_NANOGPT_DIR")
pytestmark = pytest.mark.skipif(not NANOGPT, reason="INJC_NANOGPT_DIR (a nanoGPT checkout) is not set")

FIRST = "\n# 1. right after nanoGPT's own def get_batch\n" \
        "from injc.shards.nanogpt import StepBatches\n" \
        "batches = StepBatches(data_dir, seq_len=64, rows_per_step=4, micro_batch_size=batch_size, device=device)\n" \
        "get_batch = batches.get_batch\n" \
        "block_size = 64 - 1\n" \
        "gradient_accumulation_steps = batches.gradient_accumulation_steps\n"
RECORD = "_served = get_batch\n" \
         "def get_batch(split):\n" \
         "    X, Y = _served(split)\n" \
         "    if split == 'train' and torch.is_grad_enabled():\n" \
         "        with open(os.environ['BATCH_LOG'], 'a') as log:\n" \
         "            log.write(hashlib.sha256(X.numpy().astype('<u4').tobytes()).hexdigest() + '\\n')\n" \
         "    return X, Y\n"
SECOND = "batches.start_at(iter_num)\n"
FETCH = "X, Y = get_batch('train') # fetch the very first batch"


def placed(source: str, early: bool) -> str:
    """train.py with the snippet where the docs say (or, `early`, right after the data_dir line: too early)."""
    lines = source.split("\n")
    start = lines.index(next(line for line in lines if line.startswith("def get_batch(")))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith((" ", "\t")))
    if early:
        end = lines.index(next(line for line in lines if line.startswith("data_dir = "))) + 1
    text = "\n".join(lines[:end]) + FIRST + "import hashlib\n" + RECORD + "\n".join(lines[end:])
    assert FETCH in text
    return text.replace(FETCH, SECOND + FETCH, 1)


@pytest.mark.parametrize("early", [False, True], ids=["where the docs say", "before nanoGPT's get_batch"])
def test_the_snippet_where_the_docs_say_serves_every_step_in_nanogpts_own_train_py(built, tmp_path,  # noqa: F811
                                                                                    early):
    root = tmp_path / "nanogpt"
    root.mkdir()
    for name in ("model.py", "configurator.py"):
        (root / name).write_bytes((Path(NANOGPT) / name).read_bytes())
    (root / "train.py").write_text(placed((Path(NANOGPT) / "train.py").read_text(), early))
    export(built, "nanogpt", root / "data" / "injc")
    if early:  # with a val.bin nanoGPT's own sampler runs without error (the build has no held-out tail)
        (root / "data" / "injc" / "val.bin").write_bytes((root / "data" / "injc" / "train.bin").read_bytes()[:20000])
    log = tmp_path / "batches.txt"
    settings = ["--dataset=injc", "--device=cpu", "--compile=False", "--dtype=float32", "--max_iters=39",
                "--batch_size=2", "--gradient_accumulation_steps=2", "--eval_interval=5", "--eval_iters=3",
                "--n_layer=1", "--n_head=2", "--n_embd=16", "--log_interval=10", "--always_save_checkpoint=False",
                f"--out_dir={tmp_path / 'out'}", "--warmup_iters=2", "--lr_decay_iters=40"]
    result = subprocess.run([sys.executable, "train.py", *settings], cwd=root, capture_output=True, text=True,
                            env={**os.environ, "BATCH_LOG": str(log), "PYTHONPATH": str(Path.cwd())}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    served = log.read_text().split() if log.is_file() else []
    stream = injc.open_stream(built)
    expected = [hashlib.sha256(stream.batch(step)[micro * 2:(micro + 1) * 2, :-1].astype("<u4").tobytes()).hexdigest()
                for step in range(40) for micro in range(2)]
    matched = sum(a == b for a, b in zip(served[:80], expected))
    if early:  # nanoGPT's own get_batch, defined after the snippet, replaces it: random windows, no error
        assert matched == 0
    else:
        assert served[:80] == expected and len(served) == 81  # and one prefetch after the last iteration
