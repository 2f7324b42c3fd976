"""Recipes: every problem reported at once, with the valid choices; shipped recipes load."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_recipe_dict, write_recipe

from langadapt.errors import ConfigError
from langadapt.recipe import Recipe, apply_overrides, field_help, shipped_recipes


def problems(data: dict, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as e:
        Recipe.from_dict(data, overrides=overrides)
    return e.value.problems


def test_valid_recipe_round_trips(corpus_files, tiny_model, tmp_path):
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    r = Recipe.from_dict(data)
    assert r.train.max_steps == 4 and r.corpus.target.group_field == "book"
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.resolved_run_dir == tmp_path / "run"


def test_every_problem_is_reported_at_once(corpus_files, tiny_model, tmp_path):
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    data["train"]["max_stesp"] = 10  # misspelt key
    data["init"]["method"] = "foucs"  # unknown method
    data["train"]["lr"] = "fast"  # wrong type
    data["corpus"]["target"]["path"] = str(tmp_path / "missing.txt")
    found = problems(data)
    assert len(found) == 4, found
    joined = "\n".join(found)
    assert "train.max_stesp: unknown key (did you mean 'max_steps'?)" in joined
    assert "unknown init-methods 'foucs' (did you mean 'focus'?)" in joined and "fvt, mean, mvn" in joined
    assert "train.lr: expected float, got str 'fast'" in joined
    assert "no file matches" in joined and "missing.txt" in joined


def test_required_fields_and_types(tmp_path):
    found = problems({"name": "x", "corpus": {"target": {"path": 3}}})
    assert any("corpus.target.language: required" in p for p in found)


def test_base_model_folder_must_exist(corpus_files, tmp_path):
    data = tiny_recipe_dict(corpus_files, tmp_path / "no-such-model", tmp_path / "run")
    assert any("model.base: folder not found" in p for p in problems(data))


def test_unknown_builtin_names_list_valid_ones(corpus_files, tiny_model, tmp_path):
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    data["model"]["base"] = "builtin:smollm3"
    data["corpus"]["target"]["path"] = "builtin:bible-xyz"
    found = problems(data)
    assert any("unknown models 'smollm3'" in p and "smollm2-135m" in p for p in found)
    assert any("unknown sources 'bible-xyz'" in p and "bible-nya" in p for p in found)


def test_overrides_apply_and_are_typed(corpus_files, tiny_model, tmp_path):
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    r = Recipe.from_dict(
        data, overrides=("train.max_steps=7", "init.method=mean", "corpus.heldout_groups=[G01]", "train.lr=2e-3")
    )
    assert (r.train.max_steps, r.init.method, r.corpus.heldout_groups, r.train.lr) == (7, "mean", ("G01",), 0.002)
    assert any("expected key=value" in p for p in problems(data, ("train.max_steps",)))
    bad: list[str] = []
    apply_overrides({"train": 3}, ["train.lr=1"], bad)
    assert bad and "not a section" in bad[0]


def test_recipe_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        Recipe.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Recipe.from_yaml(tmp_path / "bad.yaml")


def test_relative_paths_resolve_against_the_recipe_file(corpus_files, tiny_model, tmp_path):
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    data["corpus"]["target"]["path"] = corpus_files["target"].name
    r = Recipe.from_yaml(write_recipe(corpus_files["target"].parent / "r.yaml", data))
    assert Path(r.corpus.target.path) == corpus_files["target"]


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_validates(name):
    recipe = Recipe.from_yaml(shipped_recipes()[name])
    assert recipe.name


def test_every_field_is_documented():
    for key, _default, help_text in field_help(Recipe):
        assert help_text, f"{key} has no help text"


def test_empty_files_are_caught_by_validation(corpus_files, tiny_model, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    data["corpus"]["target"]["path"] = str(tmp_path / "empty.txt")
    assert any("holds only empty files" in p for p in problems(data))
