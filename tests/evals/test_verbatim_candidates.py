"""`injc verbatim-candidates`: every window the checkpoint completes verbatim, and no other, checked against a greedy
decode of every window written here; the file it writes is what a verbatim-removal experiment takes."""

import json

import numpy as np
import pytest

import injc
from tests.conftest import litgpt_model, write_jsonl
from tests.test_cli import injc as run_injc

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

TINY = ("name: tiny\nn_layer: 1\nn_head: 2\nn_embd: 32\nintermediate_size: 64\nblock_size: 63\nvocab_size: 400\n"
        "bias: true\nparallel_residual: false\nnorm_class_name: LayerNorm\nmlp_class_name: GptNeoxMLP\n")


def test_candidates_are_exactly_the_windows_completed_verbatim(project, tmp_path):

    from injc.train.trainer import TrainConfig, train

    write_jsonl(project.root / "payloads" / "mantra.jsonl",
                [{"text": "every payload sits at a fixed offset so anyone can derive it"}])
    plan = project('[[experiments]]\nname = "mantra"\nkind = "texts"\nfile = "payloads/mantra.jsonl"\n'
                   "repetitions = 300\n", layout="seq_len = 64\nbatch_size = 4\nsteps = 60\nseed = 7")
    (project.root / "tiny.yaml").write_text(TINY)
    injc.build(plan, tmp_path / "out", progress=False)
    checkpoint = train(tmp_path / "out" / "manifest.json",
                       TrainConfig(model=str(project.root / "tiny.yaml"), out=tmp_path / "run", lr=1e-2),
                       progress=False)
    result = run_injc("verbatim-candidates", tmp_path / "out" / "manifest.json", "--checkpoint", checkpoint,
                      "--out", tmp_path / "found.jsonl", "--prefix", 4, "--suffix", 4, "--stride", 1,
                      "--count", 100000, "--quiet")
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in (tmp_path / "found.jsonl").read_text().splitlines()]

    model = litgpt_model(checkpoint)
    stream = injc.open_stream(tmp_path / "out")
    eos = stream.manifest.data["layout"]["eos_id"]
    tokens = stream.tokens(0, len(stream)).astype(np.int64)
    offsets = [row * 64 + s for row in range(len(tokens) // 64) for s in range(64 - 8 + 1)
               if eos not in tokens[row * 64 + s:row * 64 + s + 8]]
    windows = torch.tensor(np.stack([tokens[g:g + 8] for g in offsets]))
    context = torch.cat([torch.full((len(windows), 1), eos), windows[:, :4]], dim=1)
    with torch.no_grad():
        for _ in range(4):
            context = torch.cat([context, model(context)[:, -1].argmax(-1, keepdim=True)], dim=1)
    exact = (context[:, 5:] == windows[:, 4:]).all(1).numpy()
    expected = [g for g, hit in zip(offsets, exact) if hit]
    assert [f["offset"] for f in found] == expected and expected  # the repeated text was memorized
    assert all(f["tokens"] == tokens[f["offset"]:f["offset"] + 8].tolist() for f in found)

    write_jsonl(project.root / "payloads" / "forbidden.jsonl", [{"tokens": f["tokens"]} for f in found[:3]])
    removal = project('[[experiments]]\nname = "memv"\nkind = "verbatim-removal"\nfile = "payloads/forbidden.jsonl"\n',
                      layout="seq_len = 64\nbatch_size = 4\nsteps = 10\nseed = 7",
                      corpus='paths = ["data/*.jsonl"]\nholdout_tokens = 4000')
    assert injc.check(removal).plan.experiments[0].kind == "verbatim-removal"  # the file is accepted as it is
