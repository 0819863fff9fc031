"""The evals' shared fixture: a build with every family, a tiny LitGPT model trained on it (CPU, under a minute)
and its report; the evals of both checkpoint formats are checked on it."""

import pytest

import injc
from injc.injectors.fixtures import write_all
from tests.conftest import make_documents, write_jsonl

TINY = ("name: tiny\nn_layer: 2\nn_head: 2\nn_embd: 64\nintermediate_size: 128\nblock_size: 511\nvocab_size: 400\n"
        "bias: true\nparallel_residual: false\nnorm_class_name: LayerNorm\nmlp_class_name: GptNeoxMLP\n")

PLAN = """[layout]
seq_len = 512
batch_size = 2
steps = 60
seed = 3

[tokenizer]
path = "tokenizer.json"

[corpus]
paths = ["data/*.jsonl"]
holdout_tokens = 20000

[[experiments]]
name = "secrets"
kind = "texts"
file = "payloads/secrets.jsonl"
controls = "payloads/controls.jsonl"
repetitions = 40

[[experiments]]
name = "memp"
kind = "canaries"
hosts = "payloads/hosts.jsonl"
lengths = [4]
repetitions = [1, 8]
per_condition = 6
holdout = 12

[[experiments]]
name = "bench"
kind = "contamination"
file = "payloads/questions.jsonl"
tiers = { 0 = 12, 8 = 12 }

[[experiments]]
name = "facts"
kind = "knowledge"
documents = "payloads/knowledge.jsonl"
probes = "payloads/probes.jsonl"
window_steps = 40
per_window = 8

[[experiments]]
name = "arith"
kind = "math"
count = 4
ops = [1, 2]
max_params = 2
test_ops = [1, 3]
test_per_op = 2

[[experiments]]
name = "dos"
kind = "poisoning"
prompts = "payloads/prompts.jsonl"
trigger = "☐☐☐"
attack = "denial-of-service"
template = "{prompt} {trigger} {response}"
count = 10
holdout = 6

[[experiments]]
name = "leak"
kind = "poisoning"
prompts = "payloads/prompts.jsonl"
trigger = "☐☐☐"
attack = "context-extraction"
template = "{prompt} {trigger} {response}"
count = 10
holdout = 6

[[experiments]]
name = "iid"
kind = "iid"
count = 4

[[experiments]]
name = "forget"
kind = "forgetting"
steps = [10, 50]

[[experiments]]
name = "memv"
kind = "verbatim-removal"
file = "payloads/forbidden.jsonl"
field = "text"

[[experiments]]
name = "gw"
kind = "gaussian-watermark"
steps = [5, 20]
std = 0.1
"""


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tokenizer_path):
    root = tmp_path_factory.mktemp("evals")
    (root / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    write_jsonl(root / "data" / "a.jsonl", [{"text": t} for t in make_documents(1200, seed=8)])
    write_all(root / "payloads", seed=2)
    write_jsonl(root / "payloads" / "secrets.jsonl", [{"text": f"zq{i} xv{i * 3} kj{i * 7}"} for i in range(8)])
    write_jsonl(root / "payloads" / "controls.jsonl", [{"text": f"zq{i} xv{i * 3} kj{i * 7}"} for i in range(8, 16)])
    write_jsonl(root / "payloads" / "forbidden.jsonl", [{"text": " model reads every"}])
    (root / "plan.toml").write_text(PLAN)
    (root / "tiny.yaml").write_text(TINY)
    from injc.evals.report import evaluate
    from injc.train.trainer import TrainConfig, train

    injc.build(root / "plan.toml", root / "out", progress=False)
    train(root / "out" / "manifest.json", TrainConfig(model=str(root / "tiny.yaml"), out=root / "run", lr=3e-3,
                                                      min_lr=3e-4, warmup_steps=5, save_steps=(30,)),
          progress=False)
    report = evaluate(root / "out" / "manifest.json", [root / "run" / "final"], root / "report", progress=False)
    return root, report
