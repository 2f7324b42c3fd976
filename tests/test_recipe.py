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
    assert "unknown init-methods 'foucs' (did you mean 'focus'?)" in joined and "fvt, hf-resize, mean, mvn" in joined
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
    recipe = Recipe.from_yaml(shipped_recipes()[name])  # raises ConfigError with every problem otherwise
    assert recipe.name == name  # listed under the name it runs as


def test_every_field_is_documented():
    for key, _default, help_text in field_help(Recipe):
        assert help_text, f"{key} has no help text"


def test_empty_files_are_caught_by_validation(corpus_files, tiny_model, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run")
    data["corpus"]["target"]["path"] = str(tmp_path / "empty.txt")
    assert any("holds only empty files" in p for p in problems(data))


def _setup_extras() -> set[str]:
    """The package extras `make setup` installs, nested extras (langadapt[a,b] inside an extra) expanded."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    setup = re.search(r"^setup:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert setup, "Makefile has no setup target"
    extras: set[str] = set()
    for spec in re.findall(r"pip install[^\n]*?-e\s+'?\.(\[[^\]]*\])?", setup.group(1)):
        extras.update(e.strip() for e in spec.strip("[]").split(",") if e.strip())
    declared = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    todo = list(extras)
    while todo:
        for req in declared[todo.pop()]:
            nested = re.fullmatch(r"langadapt\[([^\]]*)\]", req)
            for e in nested.group(1).split(",") if nested else ():
                if e not in extras:
                    extras.add(e)
                    todo.append(e)
    return extras


def _modules_of_extras(extras: set[str]) -> set[str]:
    """Top-level modules of the distributions the named extras require (those installed here)."""
    import re
    import tomllib
    from importlib import metadata

    root = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    dists = {re.split(r"[=<>~!\[ ]", req)[0].lower().replace("_", "-") for e in extras for req in declared[e]} - {
        "langadapt"
    }
    return {
        module
        for module, owners in metadata.packages_distributions().items()
        if any(o.lower().replace("_", "-") in dists for o in owners)
    }


def test_shipped_recipes_validate_with_what_make_setup_installs(monkeypatch):
    """What the README says to install (`make setup`) is enough for every recipe it ships: the packages of every
    other extra are hidden, and each shipped recipe still validates (validation names a missing extra)."""
    import importlib.util
    import tomllib

    root = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    setup = _setup_extras()
    hidden = _modules_of_extras(set(declared) - {"test"}) - _modules_of_extras(setup) - {"torch", "transformers"}
    assert "gensim" in hidden  # the init extra is not part of the set-up: hiding works
    find_spec = importlib.util.find_spec

    def without_hidden(name, *args, **kwargs):
        return None if name.split(".")[0] in hidden else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_hidden)
    for name, path in sorted(shipped_recipes().items()):
        try:
            Recipe.from_yaml(path)
        except ConfigError as e:
            pytest.fail(f"{name} does not validate with what `make setup` installs: {e}")
