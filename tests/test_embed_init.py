"""Init methods: one conformance battery for every registered method, plus method specifics."""

from __future__ import annotations

import pytest
import torch

from langadapt import corpus, tokenizer
from langadapt import init as embed_init
from langadapt.init.basic import init_fvt
from langadapt.init.methods import INIT_METHODS, InitInputs
from langadapt.rundir import RunDir, read_json


@pytest.mark.parametrize("method", INIT_METHODS.names())
def test_method_conformance(method):
    old = torch.randn(50, 8)
    x = InitInputs(old, [[1, 2], [], [3, 4, 5]], torch.Generator().manual_seed(0), 0.02)
    rows = INIT_METHODS.get(method)(x)
    assert rows.shape == (3, 8) and rows.dtype == old.dtype and torch.isfinite(rows).all()
    again = INIT_METHODS.get(method)(InitInputs(old, x.pieces, torch.Generator().manual_seed(0), 0.02))
    assert torch.equal(rows, again)  # deterministic given the seed


def test_fvt_is_the_mean_of_pieces_and_falls_back_to_mean():
    old = torch.randn(10, 4)
    rows = init_fvt(InitInputs(old, [[1, 3], []], torch.Generator(), 0.02))
    assert torch.allclose(rows[0], old[[1, 3]].mean(0)) and torch.allclose(rows[1], old.mean(0))


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_untied_model"])
@pytest.mark.parametrize("method", INIT_METHODS.names())
def test_stage_copies_old_rows_and_fills_new_ones(request, tiny_recipe, corpus_files, tmp_path, model_fixture, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = request.getfixturevalue(model_fixture)
    recipe = tiny_recipe(model={"base": str(model_dir)}, init={"method": method})
    rd = RunDir(recipe.resolved_run_dir)
    for stage in (corpus, tokenizer, embed_init):
        stage.run(recipe, rd)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    new = AutoModelForCausalLM.from_pretrained(rd.path("init"))
    report = read_json(rd.path("init") / "init_report.json")
    n_old = base.get_input_embeddings().weight.shape[0]
    assert report["initialised_rows"] == 40 and report["copied_rows"] == n_old
    assert torch.equal(new.get_input_embeddings().weight[:n_old], base.get_input_embeddings().weight)
    tied = model_fixture == "tiny_model"
    assert report["tied_embeddings"] is tied and report["output_head_initialised"] is (not tied)
    if not tied:
        assert torch.equal(new.get_output_embeddings().weight[:n_old], base.get_output_embeddings().weight)
        assert not torch.equal(new.get_output_embeddings().weight[n_old:], new.get_input_embeddings().weight[n_old:])
    if method == "fvt":
        tok = AutoTokenizer.from_pretrained(rd.path("init"))
        base_tok = AutoTokenizer.from_pretrained(model_dir)
        token = tok.convert_ids_to_tokens(n_old)
        pieces = embed_init.decompose(token, base_tok)
        assert len(pieces) >= 2
        expected = base.get_input_embeddings().weight[pieces].mean(0)
        assert torch.allclose(new.get_input_embeddings().weight[n_old], expected, atol=1e-6)
