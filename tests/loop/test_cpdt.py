"""CPDT on a tiny model: two experiments that should not interfere, three seeds, rows trained in two processes.

The structure the paper expects: each experiment's own row lowers its own loss (significant), the other row does
not move it (not significant), the `all` row moves both. The numbers are checked against computations here:
the loss of the inserted items with LitGPT directly, and the t-test with scipy on the raw per-seed values.
"""

import json
import random
from pathlib import Path

import numpy as np
import pytest

import injc
from tests.conftest import litgpt_model, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("litgpt")

from injc.loop.cpdt import CpdtConfig, cpdt  # noqa: E402
from injc.train.trainer import TrainConfig, train  # noqa: E402

TINY = ("name: tiny\nn_layer: 1\nn_head: 2\nn_embd: 32\nintermediate_size: 64\nblock_size: 63\nvocab_size: 400\n"
        "bias: true\nparallel_residual: false\nnorm_class_name: LayerNorm\nmlp_class_name: GptNeoxMLP\n")
LAYOUT = "[layout]\nseq_len = 64\nbatch_size = 4\nsteps = {steps}\nseed = 1\n"
REST = '[tokenizer]\npath = "tokenizer.json"\n[corpus]\npaths = ["data/*.jsonl"]\n'
EXPERIMENTS = """
[[experiments]]
name = "letters"
kind = "texts"
file = "letters.jsonl"

[[experiments]]
name = "digits"
kind = "texts"
file = "digits.jsonl"
"""


def cpdt_project(root, tokenizer_path, steps: int):
    """A corpus, two payload files (random letters, random digits) and `cpdt.toml`: `steps` steps of them."""
    from tests.conftest import make_documents

    (root / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    write_jsonl(root / "data" / "a.jsonl", [{"text": t} for t in make_documents(600, seed=1)])
    rng = random.Random(3)
    for name, alphabet in (("letters", "abcdefghijklmnopqrstuvwxyz"), ("digits", "0123456789")):
        write_jsonl(root / f"{name}.jsonl", [{"text": "".join(rng.choice(alphabet) for _ in range(12))}
                                             for _ in range(16)])
    (root / "cpdt.toml").write_text(LAYOUT.format(steps=steps) + REST + EXPERIMENTS)
    return root / "cpdt.toml"


@pytest.fixture(scope="module")
def design(tmp_path_factory, tokenizer_path):
    """A base checkpoint (40 steps on the plain corpus), a CPDT plan of two 1.4% experiments, and its run."""
    root = tmp_path_factory.mktemp("cpdt")
    cpdt_project(root, tokenizer_path, 60)
    (root / "tiny.yaml").write_text(TINY)
    (root / "base.toml").write_text(LAYOUT.format(steps=40) + REST)
    injc.build(root / "base.toml", root / "base", progress=False)
    base = train(root / "base" / "manifest.json", TrainConfig(model=str(root / "tiny.yaml"), out=root / "runs",
                                                              lr=3e-3), progress=False)
    result = cpdt(root / "cpdt.toml", CpdtConfig(checkpoint=base, seeds=3, jobs=2, logger="csv"), root / "report",
                  progress=False)
    return root, base, result


def test_own_rows_lower_own_loss_other_rows_do_not_and_all_moves_both(design):
    _, _, result = design
    assert result["matrix_rows"] == ["letters", "digits", "all"] and result["test"] == "seeds"
    assert [o["experiment"] for o in result["outcomes"]] == ["letters", "digits"]
    (own_l, other_d), (other_l, own_d), (all_l, all_d) = result["matrix"]
    (p_ll, p_ld), (p_dl, p_dd), (p_al, p_ad) = result["p_values"]
    assert own_l < -0.05 and own_d < -0.05 and p_ll < 0.05 and p_dd < 0.05
    assert p_ld > 0.05 and p_dl > 0.05 and abs(other_d) < 0.1 * abs(own_d) and abs(other_l) < 0.1 * abs(own_l)
    assert all_l < -0.05 and all_d < -0.05 and p_al < 0.05 and p_ad < 0.05


def test_results_name_the_checkpoint_as_it_was_given(design, monkeypatch):
    """A rerun of the finished design from its folder, the checkpoint given relative: cpdt.json and cpdt.md say
    runs/final, not the machine's absolute path (design.json keeps the resolved path that identifies the run)."""
    root, base, _ = design
    monkeypatch.chdir(root)
    result = cpdt(root / "cpdt.toml", CpdtConfig(checkpoint=Path("runs") / "final", seeds=3, jobs=2, logger="csv"),
                  root / "report", progress=False)
    assert result["design"]["checkpoint"] == "runs/final"
    assert json.loads((root / "report" / "cpdt.json").read_text())["design"]["checkpoint"] == "runs/final"
    assert "from `runs/final`" in (root / "report" / "cpdt.md").read_text() and str(root) not in \
        (root / "report" / "cpdt.md").read_text()
    assert json.loads((root / "report" / "design.json").read_text())["checkpoint"] == str(base.resolve())


def test_cells_are_the_per_seed_differences_and_their_t_test(design):
    from scipy import stats

    _, _, result = design
    raw = result["raw"]
    for r, row in enumerate(result["matrix_rows"]):
        for c, outcome in enumerate(["letters", "digits"]):
            differences = np.array(raw[row][outcome]) - np.array(raw["none"][outcome])
            assert result["matrix"][r][c] == pytest.approx(differences.mean())
            assert result["p_values"][r][c] == pytest.approx(stats.ttest_rel(raw[row][outcome],
                                                                              raw["none"][outcome]).pvalue)
            # the t interval on 2 degrees of freedom (t = 4.303), not the normal one (z = 1.96)
            half = 4.302652729911275 * differences.std(ddof=1) / np.sqrt(3)
            assert result["ci"][r][c] == pytest.approx([differences.mean() - half, differences.mean() + half])


def test_raw_outcomes_are_the_inserted_items_losses_computed_here(design):
    """Y of the digits experiment after the `none` row of seed 0, from the model and the items directly."""

    root, _, result = design
    seed0 = root / "report" / "seed-0"
    checkpoint = seed0 / "none" / "run" / "final"
    model = litgpt_model(checkpoint)
    manifest = injc.load_manifest(seed0 / "all" / "build")
    eos = manifest.data["layout"]["eos_id"]
    import pyarrow.parquet as pq

    items = pq.read_table(manifest.root / "items.parquet").to_pylist()
    losses = []
    for item in (i for i in items if i["experiment"] == "digits" and i["copies"] > 0):
        tokens = [t for t in item["tokens"] if t != eos]
        sequence = torch.tensor([[eos, *tokens]])
        with torch.no_grad():
            logits = model(sequence[:, :-1])
        losses.append(torch.nn.functional.cross_entropy(logits[0], sequence[0, 1:]).item())
    assert result["raw"]["none"]["digits"][0] == pytest.approx(np.mean(losses), rel=1e-5)


def test_a_rerun_continues_with_unfinished_rows_only(design):
    root, base, result = design
    report = root / "report"
    assert "target" not in json.loads((report / "design.json").read_text())  # as runs from before --target wrote it
    kept = {p: p.stat().st_mtime_ns for p in report.glob("seed-*/*/eval.json")}
    (report / "seed-1" / "digits" / "eval.json").unlink()
    again = cpdt(root / "cpdt.toml", CpdtConfig(checkpoint=base, seeds=3, jobs=2), report, progress=False)
    changed = [p for p, mtime in kept.items() if p.stat().st_mtime_ns != mtime]
    assert changed == [report / "seed-1" / "digits" / "eval.json"]
    assert np.allclose(again["matrix"], result["matrix"], atol=1e-6)
    with pytest.raises(injc.InjcError, match="another design"):
        cpdt(root / "cpdt.toml", CpdtConfig(checkpoint=base, seeds=2), report, progress=False)


def test_bad_designs_are_refused_before_any_work(design, tmp_path):
    root, base, _ = design
    with pytest.raises(injc.InjcError, match="more than the plan's run of 60 steps"):
        cpdt(root / "cpdt.toml", CpdtConfig(checkpoint=base, steps=61), tmp_path / "a", progress=False)
    write_jsonl(root / "forbidden.jsonl", [{"tokens": [5, 6, 7]}])
    (root / "verbatim.toml").write_text(LAYOUT.format(steps=60) + REST.replace(
        '["data/*.jsonl"]', '["data/*.jsonl"]\nholdout_tokens = 2000')
        + '[[experiments]]\nname = "memv"\nkind = "verbatim-removal"\nfile = "forbidden.jsonl"\n')
    with pytest.raises(injc.InjcError, match="'memv' .verbatim-removal. has no CPDT outcome"):
        cpdt(root / "verbatim.toml", CpdtConfig(checkpoint=base), tmp_path / "b", progress=False)
    small = tmp_path / "small-vocab"
    small.mkdir()
    (small / "model_config.yaml").write_text(TINY.replace("vocab_size: 400", "vocab_size: 100\npadded_vocab_size: 128"))
    (small / "lit_model.pth").write_bytes(b"")
    with pytest.raises(injc.InjcError, match="has 128 embedding rows but the manifest's tokenizer has"):
        cpdt(root / "cpdt.toml", CpdtConfig(checkpoint=small), tmp_path / "c", progress=False)
    assert not any((tmp_path / name).exists() for name in "abc")


def test_init_starts_from_the_checkpoint_weights(design, tmp_path):
    root, base, _ = design
    frozen = train(root / "base" / "manifest.json",
                   TrainConfig(model=None, init=base, out=tmp_path / "run", steps=1, lr=0.0, min_lr=0.0),
                   progress=False)
    before, after = (torch.load(p / "lit_model.pth", weights_only=True) for p in (base, frozen))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(injc.InjcError, match="give --model .* or --init"):
        train(root / "base" / "manifest.json", TrainConfig(model=str(root / "tiny.yaml"), init=base,
                                                           out=tmp_path / "both"), progress=False)


def test_outcomes_read_the_per_item_values_of_each_kind():
    from injc.loop.cpdt import OUTCOMES

    leak = {"prompts": [{"sample_recalls_with_trigger": [0.2, 0.95]}, {"sample_recalls_with_trigger": [0.9, 0.5]}]}
    assert OUTCOMES["poisoning"][1](leak).tolist() == [1.0, 0.0]  # leaked by a sample above 0.9; 0.9 is not
    canaries = {"items": [{"member": True, "loss": 2.0}, {"member": False, "loss": 3.0}, {"member": True, "loss": 1.0}]}
    assert OUTCOMES["canaries"][1](canaries).tolist() == [2.0, 1.0]
    bench = {"items": [{"tier": 0, "correct": True}, {"tier": 4, "correct": False}, {"tier": 4, "correct": True}]}
    assert OUTCOMES["contamination"][1](bench).tolist() == [0.0, 1.0]
    maths = {"problems": [{"ops": 2, "correct": True}, {"ops": 1, "correct": False}, {"ops": 1, "correct": True}]}
    assert OUTCOMES["math"][1](maths).tolist() == [0.0, 1.0]
    facts = {"probes": [{"probability": 0.3, "correct": True}, {"probability": 0.6, "correct": False}]}
    assert OUTCOMES["knowledge"][1](facts).tolist() == [1.0, 0.0]  # QA accuracy, the paper's Table 8


def test_each_rows_training_is_logged_where_the_logger_writes(design):
    import csv
    import json

    root, _, _ = design
    run = root / "report" / "seed-1" / "digits" / "run"
    with open(run / "logs" / "csv" / "from-step-000000" / "metrics.csv") as handle:
        losses = [float(r["loss"]) for r in csv.DictReader(handle) if r.get("loss")]
    assert losses == pytest.approx([json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().split("\n")
                                    if line])


def test_the_matrix_is_logged_cell_by_cell(design):
    import csv

    root, _, result = design
    with open(root / "report" / "logs" / "csv" / "from-step-000000" / "metrics.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["step"] == "0"
    for r, name in enumerate(result["matrix_rows"]):
        for o, outcome in enumerate(result["outcomes"]):
            experiment = outcome["experiment"]
            assert float(row[f"{name}/{experiment}/difference"]) == pytest.approx(result["matrix"][r][o])
            assert float(row[f"{name}/{experiment}/p_value"]) == pytest.approx(result["p_values"][r][o])
