import pytest

from injc.compiler.plan import load_plan
from injc.errors import PlanError
from injc.injectors import KINDS
from tests.conftest import CANARIES


def problems_of(path) -> list[str]:
    with pytest.raises(PlanError) as error:
        load_plan(path)
    return error.value.problems


def test_valid_plan_resolves_paths_and_defaults(project):
    plan = load_plan(project(CANARIES))
    assert plan.layout.total_tokens == 64 * 4 * 50 and plan.seed == 7
    assert [p.name for p in plan.corpus.files] == ["a.jsonl", "b.jsonl"]
    assert plan.tokenizer.path == project.root / "tokenizer.json" and plan.tokenizer.eos is None
    (experiment,) = plan.experiments
    assert (experiment.name, experiment.kind, experiment.field, experiment.repetitions) == ("canaries", "texts",
                                                                                            "text", 3)
    assert experiment.placement.mode == "random"
    assert plan.shard_steps == (1 << 28) // 256


def test_every_problem_is_reported_at_once_with_its_location(project):
    path = project(
        """
        [[experiments]]
        name = "x"
        kind = "texts"
        file = "payloads/missing.jsonl"
        placement = "range"
        start_step = 9
        end_step = 3
        colour = "red"

        [[experiments]]
        name = "x"
        kind = "sorcery"
        """,
        layout='seq_len = 0\nbatch_size = "four"\nsteps = 10\nsede = 1',
        corpus='paths = ["nothing/*.jsonl"]\nformat = "csv"',
    )
    problems = problems_of(path)
    assert problems[0].endswith("10 problems in " + str(path) + ":")
    body = [p.strip() for p in problems[1:]]
    assert body == [
        "layout.seq_len: must be ≥ 2, got 0",
        "layout.batch_size: expected an integer, got a string 'four'",
        "layout.sede: unknown key; did you mean 'seed'?",
        "corpus.format: must be one of 'jsonl', 'parquet', 'text', 'tokens', 'hf', got 'csv'",
        "corpus.paths: 'nothing/*.jsonl' matches no file",
        f"experiments[0] \"x\".file: file {str(project.root / 'payloads/missing.jsonl')!r} not found",
        "experiments[0] \"x\".end_step: must be greater than start_step (9), got 3",
        "experiments[0] \"x\".colour: unknown key",
        "experiments[1].name: duplicate experiment name 'x'",
        f"experiments[1] \"x\".kind: must be one of {', '.join(repr(k) for k in KINDS)}, got 'sorcery'",
    ]


def test_not_toml_and_missing_sections(project, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[layout\nseq_len = 3")
    (problem,) = problems_of(bad)
    assert "is not valid TOML" in problem
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    body = [p.strip() for p in problems_of(empty)[1:]]
    assert "layout.seq_len: missing required key" in body and "corpus.paths: missing required key" in body
    assert "tokenizer.path: missing required key" in body


def test_relative_paths_may_not_escape_the_plan_folder(project):
    path = project(corpus='paths = ["../elsewhere/*.jsonl"]')
    assert any("may not contain '..'" in p for p in problems_of(path))


def test_placement_keys_must_match_the_mode(project):
    path = project(CANARIES + "start_step = 3\n")
    assert any('experiments[0] "canaries".start_step: only valid with placement = "range"' in p
               for p in problems_of(path))
    explicit = project(CANARIES.replace("repetitions = 3", 'repetitions = 3\nplacement = "explicit"'))
    assert any("explicit placement writes each line once" in p for p in problems_of(explicit))


def test_tokens_format_needs_a_dtype_and_only_it_takes_one(project):
    assert any("needs dtype" in p for p in problems_of(project(corpus='paths = ["data/*.jsonl"]\nformat = "tokens"')))
    assert any("corpus.dtype: only valid with format = \"tokens\"" in p
               for p in problems_of(project(corpus='paths = ["data/*.jsonl"]\ndtype = "uint16"')))


def test_wrong_types_everywhere(project):
    path = project('[[experiments]]\nname = 3\nkind = "texts"\n', layout="seq_len = 1.5\nbatch_size = true\nsteps = []")
    body = [p.strip() for p in problems_of(path)[1:]]
    assert "layout.seq_len: expected an integer, got a number 1.5" in body
    assert "layout.batch_size: expected an integer, got a boolean True" in body
    assert "experiments[0].name: expected a string, got an integer 3" in body
