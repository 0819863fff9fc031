"""Property-based hostile input: malformed plans and payload files never crash injc.

Whatever the input, `injc build` either succeeds (and the build verifies) or exits with code 2, one
'injc: error:' line per problem, no traceback, and nothing left on disk.
"""

import json
import math
import os
import shutil

from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import injc
from injc.cli import main
from tests.conftest import make_documents, write_jsonl

BASE = {
    "layout": {"seq_len": 64, "batch_size": 4, "steps": 20, "seed": 1},
    "tokenizer": {"path": "tokenizer.json"},
    "corpus": {"paths": ["data/*.jsonl"]},
    "experiments": [{"name": "canaries", "kind": "texts", "file": "payloads/canaries.jsonl", "repetitions": 2}],
}
KEYS = ["seq_len", "batch_size", "steps", "seed", "shard_tokens", "path", "eos", "paths", "format", "text_field",
        "dtype", "holdout_tokens", "name", "kind", "file", "field", "repetitions", "placement", "start_step",
        "end_step", "tiers", "bogus"]
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True), st.booleans(),
    st.text(max_size=12), st.sampled_from(["../escape.jsonl", "/nonexistent/x", "random", "range", "explicit",
                                           "texts", "tokens", "contamination", "uint16", "tokens"]),
    st.lists(st.one_of(st.integers(-5, 10**6), st.text(max_size=5)), max_size=3),
)
# CI replays the same 40 examples each run (derandomized); INJC_HYPOTHESIS_EXAMPLES=N searches N fresh ones.
SETTINGS = settings(max_examples=int(os.environ.get("INJC_HYPOTHESIS_EXAMPLES", 40)), deadline=None,
                    derandomize="INJC_HYPOTHESIS_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                else repr(value))
    if isinstance(value, (int,)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(plan: dict) -> str:
    lines = []
    for section in ("layout", "tokenizer", "corpus"):
        if section in plan:
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in plan[section].items()]
    for experiment in plan.get("experiments", []):
        lines.append("[[experiments]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in experiment.items()]
    return "\n".join(lines) + "\n"


def check_run(root, plan_text: str) -> int:
    (root / "plan.toml").write_text(plan_text, encoding="utf-8", errors="surrogatepass")
    shutil.rmtree(root / "out", ignore_errors=True)
    result = CliRunner().invoke(main, ["build", str(root / "plan.toml"), "--out", str(root / "out"), "--quiet"])
    assert result.exit_code in (0, 2), (result.exit_code, result.exception, plan_text)
    if result.exit_code == 2:
        assert isinstance(result.exception, SystemExit)
        lines = result.stderr.strip().splitlines()
        assert lines and lines[0].startswith("injc: error: ") and "Traceback" not in result.stderr
        assert all(line.startswith(("injc: error: ", "  ")) for line in lines), lines
        assert not (root / "out").exists()
    else:
        assert injc.verify(root / "out") == []
    assert not [p for p in root.iterdir() if p.name.startswith(".out.")], "no partial output or lock left"
    return result.exit_code


@given(mutations=st.lists(st.tuples(st.sampled_from(["layout", "tokenizer", "corpus", "experiment"]),
                                    st.sampled_from(KEYS), st.one_of(st.none(), VALUES)), min_size=1, max_size=3),
       duplicate=st.booleans())
@SETTINGS
def test_malformed_plans(project, mutations, duplicate):
    plan = json.loads(json.dumps(BASE))
    for section, key, value in mutations:
        table = plan["experiments"][0] if section == "experiment" else plan[section]
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    if duplicate:
        plan["experiments"].append(dict(plan["experiments"][0]))
    project()  # writes the project's files
    event(f"exit code {check_run(project.root, to_toml(plan))}")  # see --hypothesis-show-statistics


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                               ["text", "tokens", "offset", "x"]), inner, max_size=3), max_leaves=8)


@given(lines=st.lists(st.one_of(JSON_VALUES.map(json.dumps), st.binary(max_size=20).map(
    lambda b: b.decode("latin-1")), st.just("{\"text\": \"ok\"}"), st.just("")), max_size=5),
       kind=st.sampled_from(["texts", "tokens"]), explicit=st.booleans(), raw=st.binary(max_size=16))
@SETTINGS
def test_malformed_payload_files(project, lines, kind, explicit, raw):
    experiment = dict(BASE["experiments"][0], kind=kind)
    if explicit:
        experiment = {k: v for k, v in experiment.items() if k != "repetitions"} | {"placement": "explicit"}
    project()
    payload = project.root / "payloads" / "canaries.jsonl"
    payload.write_bytes("\n".join(lines).encode("utf-8", errors="surrogatepass") + raw)
    event(f"exit code {check_run(project.root, to_toml({**BASE, 'experiments': [experiment]}))}")


def test_bad_utf8_and_empty_payload_files(project):
    project()
    payload = project.root / "payloads" / "canaries.jsonl"
    for content in (b"", b"\xff\xfe{\"text\": 1}\n", b"{\"text\": \"a\"}\n{\"text\": \"\xc3\x28\"}\n"):
        payload.write_bytes(content)
        check_run(project.root, to_toml(BASE))


def test_corpus_with_bad_lines(project):
    project()
    write_jsonl(project.root / "data" / "a.jsonl", [{"text": t} for t in make_documents(10)])
    (project.root / "data" / "b.jsonl").write_bytes(b"{\"text\": \"fine\"}\nnot json\n")
    check_run(project.root, to_toml(BASE))
