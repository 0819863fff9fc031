"""bench/gpu.sh, the one-run device check, at toy size on the CPU (`--smoke`): every section runs and writes its
figures, so the script a GPU session relies on cannot rot. On the CPU the bf16 scoring runs under CPU autocast and
generation in float32, where LitGPT's greedy decoding and transformers' must choose the same tokens."""

import json
import math
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_check_runs_every_section_at_toy_size(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", "--out", str(tmp_path / "gpu.json")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu.json").read_text())
    assert figures["smoke"] is True and figures["device"] == "cpu"
    train = figures["train"]
    for key in ("injc_tokens_per_s", "litgpt_pretrain_tokens_per_s", "ratio"):
        assert math.isfinite(train[key]) and train[key] > 0, key
    assert figures["fsdp"] == {"skipped": "1 device visible: FSDP needs 2 or more"}
    differences = figures["eval"]["max_difference"]
    assert figures["eval"]["within"] and set(differences) >= {"token_loss", "mean_loss"}
    assert all(0 < differences[k] <= figures["eval"]["tolerance"][k] for k in differences)  # bf16 ran, and agrees
    assert figures["eval"]["p7"]["sequences"] > 0 and figures["eval"]["p7"]["ratio"] > 0
    generation = figures["generation"]
    assert generation["precision"] == "32-true" and generation["same_tokens"] == 1.0
