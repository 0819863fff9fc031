"""BuildOptions: the one place that checks a build's options, and how `build` takes them."""

import dataclasses
import json

import pytest

import injc
from injc.compiler.build import build
from injc.compiler.options import BuildOptions
from injc.compiler.plan import load_plan
from tests.conftest import CANARIES


@pytest.mark.parametrize("fields, message", [
    ({"fraction": 1.0}, "--fraction must be between 0 and 1, got 1.0"),
    ({"fraction": 0}, "--fraction must be between 0 and 1, got 0"),
    ({"target": "megatron:3"}, "only olmo-core is written directly"),
    ({"target": "olmo-core:x"}, "give OLMo-core's data seed"),
    ({"seed": -1}, "--seed must be 0 or more, got -1"),
    ({"skip_tokens": -5}, "--skip-tokens must be 0 or more, got -5"),
    ({"until_step": 0}, "--until-step must be 1 or more, got 0"),
])
def test_bad_options_are_refused_when_made(fields, message):
    with pytest.raises(injc.InjcError, match=message):
        BuildOptions(**fields)


def test_options_are_frozen_and_hold_the_selection_as_a_tuple():
    options = BuildOptions(only=["a", "b"], target="olmo-core:12")
    assert options.only == ("a", "b") and options.target_seed == 12 and BuildOptions().target_seed is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.clean = True


def test_applied_replaces_the_plans_seed_and_corpus_window(project):
    plan = load_plan(project(CANARIES))
    assert (plan.seed, plan.corpus.skip_tokens) == (7, 0)
    changed = BuildOptions(seed=3, skip_tokens=640).applied(plan)
    assert (changed.seed, changed.corpus.skip_tokens) == (3, 640)
    assert changed.corpus.files == plan.corpus.files and changed.experiments == plan.experiments
    assert BuildOptions().applied(plan) == plan


def test_keyword_fields_are_added_to_the_options_given(project, tmp_path):
    plan = project(CANARIES)
    build(plan, tmp_path / "both", BuildOptions(clean=True, seed=3, progress=False), until_step=20)
    manifest = json.loads((tmp_path / "both" / "manifest.json").read_text())
    assert (manifest["variant"], manifest["plan"]["seed"], manifest["until_step"]) == ("clean", 3, 20)
    with pytest.raises(injc.InjcError, match="--until-step must be between 1 and the run's 50 steps, got 51"):
        build(plan, tmp_path / "long", BuildOptions(progress=False), until_step=51)
    with pytest.raises(TypeError, match="unexpected keyword argument 'cleen'"):
        build(plan, tmp_path / "typo", cleen=True)
    assert not (tmp_path / "long").exists() and not (tmp_path / "typo").exists()
