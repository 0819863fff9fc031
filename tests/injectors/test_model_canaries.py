"""canary = "model": the canary is the ids a given checkpoint finds least likely right after the host."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import injc
from tests.conftest import litgpt_model, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

TINY = ("name: tiny\nn_layer: 1\nn_head: 2\nn_embd: 32\nintermediate_size: 64\nblock_size: 63\nvocab_size: 400\n"
        "bias: true\nparallel_residual: false\nnorm_class_name: LayerNorm\nmlp_class_name: GptNeoxMLP\n")


def test_model_canaries_are_the_least_likely_ids_after_each_host(project, tmp_path):

    from injc.train.trainer import TrainConfig, train

    (project.root / "tiny.yaml").write_text(TINY)
    injc.build(project(), tmp_path / "base", progress=False)
    checkpoint = train(tmp_path / "base" / "manifest.json",
                       TrainConfig(model=str(project.root / "tiny.yaml"), out=tmp_path / "run", steps=5),
                       progress=False)
    write_jsonl(project.root / "payloads" / "hosts.jsonl", [{"text": f"the model reads token {i} of the stream"}
                                                             for i in range(12)])
    plan = project(f'[[experiments]]\nname = "memp"\nkind = "canaries"\nhosts = "payloads/hosts.jsonl"\n'
                   f'canary = "model"\ncanary_model = "{checkpoint / "lit_model.pth"}"\nlengths = [3]\n'
                   f'repetitions = [2]\nper_condition = 4\nholdout = 4\n')
    injc.build(plan, tmp_path / "out", progress=False)

    model = litgpt_model(checkpoint)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    eos, vocab = manifest["layout"]["eos_id"], manifest["layout"]["vocab_size"]
    ordinary = np.array([i for i in range(vocab) if i != eos])  # the test tokenizer's only special token is EOS
    records = json.loads((tmp_path / "out" / "evals" / "memp.json").read_text())["items"]
    items = [i for i in pq.read_table(tmp_path / "out" / "items.parquet").to_pylist() if i["experiment"] == "memp"]
    assert len(records) == 8 and sum(r["member"] for r in records) == 4
    for record, item in zip(records, items):
        host = [t for t in item["tokens"] if t != eos][:record["host_tokens"]]
        with torch.no_grad():
            logits = model(torch.tensor([[eos, *host]]))[0, -1]
        expected = ordinary[np.argsort(logits[ordinary].numpy(), kind="stable")[:3]]
        assert record["canary"] == expected.tolist()
        assert [t for t in item["tokens"] if t != eos][record["host_tokens"]:] == expected.tolist()


def test_model_canaries_need_a_model_and_only_they_take_one(project):
    from tests.compiler.test_plan import problems_of

    need = project('[[experiments]]\nname = "m"\nkind = "canaries"\nhosts = "payloads/canaries.jsonl"\n'
                   'canary = "model"\n')
    assert any('canary = "model" needs canary_model' in p for p in problems_of(need))
    extra = project('[[experiments]]\nname = "m"\nkind = "canaries"\nhosts = "payloads/canaries.jsonl"\n'
                    'canary_model = "tokenizer.json"\n')
    assert any('canary_model: only valid with canary = "model"' in p for p in problems_of(extra))
