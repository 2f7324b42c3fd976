"""Encoders as masked-LM models: loading, the created head, and what decides encoder vs decoder."""

from __future__ import annotations

import pytest
from conftest import ENCODER_KINDS, build_tiny_encoder

from langadapt.models.encoder import PACKED_ENCODERS


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_encoder_loads_as_masked_lm_and_missing_head_is_created_tied(kind, tmp_path):
    from langadapt.models.loading import is_encoder, load_model

    with_head = load_model(str(build_tiny_encoder(tmp_path / "head", kind)))
    assert type(with_head).__name__.endswith("ForMaskedLM")
    assert not getattr(with_head.config, "mlm_head_created", False)

    body_only = build_tiny_encoder(tmp_path / "body", kind, head=False)
    assert is_encoder(str(body_only))
    model = load_model(str(body_only))
    assert type(model).__name__.endswith("ForMaskedLM") and model.config.mlm_head_created
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    again = load_model(str(body_only))  # the created head is the same on every load: runs are reproducible
    assert all(v.equal(again.state_dict()[k]) for k, v in model.state_dict().items())
    model.save_pretrained(tmp_path / "saved")  # the flag travels with the saved model
    assert load_model(str(tmp_path / "saved")).config.mlm_head_created


def test_decoders_are_not_encoders(tiny_model):
    from transformers import BertConfig, LlamaConfig

    from langadapt.models.loading import is_encoder, load_model

    assert not is_encoder(str(tiny_model))
    assert type(load_model(str(tiny_model))).__name__ == "LlamaForCausalLM"
    assert not is_encoder(BertConfig(is_decoder=True))
    assert not is_encoder(LlamaConfig())
    assert is_encoder(BertConfig(architectures=["BertModel"]))


# -- masked-LM objective ------------------------------------------------------------------------


def _plan(folder, **overrides):
    from langadapt.models.loading import load_tokenizer
    from langadapt.train.config import TrainConfig
    from langadapt.train.mlm import MaskingPlan

    tok = load_tokenizer(str(folder))
    return tok, MaskingPlan.from_tokenizer(tok, TrainConfig(**overrides))


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_whole_word_masking_covers_whole_words_and_never_special_tokens(kind, tmp_path):
    import torch
    from conftest import english_lines, target_docs

    tok, plan = _plan(build_tiny_encoder(tmp_path / kind, kind), mlm_probability=0.3)
    assert plan.scheme == kind
    text = " ".join(english_lines(3, seed=5)) + " " + target_docs(seed=4)[0]["text"]
    ids = torch.tensor([tok(text)["input_ids"][:60]] * 8)  # cls/bos ... as the tokenizer frames a text
    torch.manual_seed(0)
    chosen = plan.choose(ids)
    words, special = plan.word_ids(ids)
    assert not (chosen & special).any()
    assert chosen.any(dim=1).all()
    for row in range(ids.shape[0]):  # a word is chosen entirely or not at all
        for w in words[row][chosen[row]].unique():
            in_word = (words[row] == w) & ~special[row]
            assert chosen[row][in_word].all()
    # whole words really span several pieces somewhere: the test would be vacuous otherwise
    assert any((words[0] == w).sum() > 1 for w in words[0].unique())
    # about 30% of maskable tokens, whole words at a time
    share = chosen.sum() / (~special).sum()
    assert 0.15 < share < 0.4
    # 80/10/10: most chosen positions become the mask token, none of the others change
    corrupted = plan.corrupt(ids, chosen)
    assert (corrupted[~chosen] == ids[~chosen]).all()
    assert 0.6 < (corrupted[chosen] == tok.mask_token_id).float().mean() < 0.95


def test_word_boundaries_come_from_the_tokenizer_not_the_name(tmp_path):
    from langadapt.models.encoder import WordBoundaries

    tok, _ = _plan(build_tiny_encoder(tmp_path / "wp", "wordpiece"))
    words = WordBoundaries(tok)
    vocab = tok.get_vocab()
    assert words.family == "wordpiece"
    assert words.starts([vocab["the"], vocab["##e"], vocab["the"]]) == [True, False, True]


def test_mlm_loss_is_computed_at_masked_positions_only_and_matches_the_full_head(tiny_encoder):
    import torch
    import torch.nn.functional as F

    from langadapt.models.encoder import mlm_logits_at
    from langadapt.models.loading import load_model
    from langadapt.train.mlm import masked_lm

    tok, plan = _plan(tiny_encoder)
    model = load_model(str(tiny_encoder)).eval()
    ids = torch.tensor([tok("the man went to the city and saw the river")["input_ids"]] * 3)
    select = torch.zeros_like(ids, dtype=torch.bool)
    select[:, 2:5] = True
    with torch.no_grad():
        full = model(input_ids=ids).logits[select]
        part = mlm_logits_at(model, ids, torch.ones_like(ids), select)
    torch.testing.assert_close(part, full)
    objective = masked_lm(plan)  # the plan travels with the objective, not on the model
    torch.manual_seed(1)
    loss = objective(model, ids)
    assert loss.shape == (3, 1) and torch.isfinite(loss).all()
    # the same draw computed by hand with the full head
    torch.manual_seed(1)
    chosen, corrupted = plan.draw(ids)
    with torch.no_grad():
        logits = model(input_ids=corrupted).logits
    expected = torch.stack([F.cross_entropy(logits[r][chosen[r]], ids[r][chosen[r]]) for r in range(3)])
    torch.testing.assert_close(loss.detach().squeeze(1), expected)


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_whole_word_masking_fills_its_budget_at_high_fertility(kind, tmp_path):
    """Words in random order while they fit, skipping a word too long for what is left (as the field's
    whole-word collators do): the masked share stays within one point of mlm_probability where a word
    is 2.5-3 tokens on average, instead of stopping short at the first word that overflows."""
    import torch
    from conftest import target_docs

    tok, plan = _plan(build_tiny_encoder(tmp_path / kind, kind), mlm_probability=0.15)
    docs = [d["text"] for d in target_docs(seed=11)]
    ids = [i for d in docs for i in tok(d, add_special_tokens=False)["input_ids"]]
    rows = torch.tensor([ids[s : s + 80] for s in range(0, len(ids) - 80, 80)])  # 80 tokens: a budget of 12
    words, special = plan.word_ids(rows)
    fertility = (~special).sum() / sum(len(set(words[r][~special[r]].tolist())) for r in range(len(rows)))
    if kind == "sentencepiece":  # XLM-R's kind of tokenizer, at the fertility the claim is about
        assert 2.5 <= fertility <= 3.0, fertility
    torch.manual_seed(0)
    share = sum(float(plan.choose(rows).sum() / (~special).sum()) for _ in range(5)) / 5
    assert abs(share - 0.15) <= 0.01, (share, fertility)


def test_whole_word_fill_for_all_rows_at_once_is_the_one_word_at_a_time_fill():
    """`fill_rounds` (the device's, every row at once) takes exactly the words `fill_in_order` takes,
    long words, budgets smaller than every word and rows without words included."""
    import random

    import torch

    from langadapt.train.mlm import fill_in_order, fill_rounds

    rng = random.Random(0)
    rows = []
    for _ in range(300):
        sizes = [rng.choice([1, 1, 1, 2, 2, 3, 4, rng.randint(5, 40)]) for _ in range(rng.randint(0, 30))]
        rows.append((sizes, rng.randint(1, 40)))
    width = max(len(sizes) for sizes, _ in rows)
    size = torch.tensor([sizes + [0] * (width - len(sizes)) for sizes, _ in rows])
    budget = torch.tensor([b for _, b in rows])
    expected = torch.tensor([fill_in_order(sizes, b) + [False] * (width - len(sizes)) for sizes, b in rows])
    rounds = min(int(size.max()), int(budget.max())) + 1
    assert torch.equal(fill_rounds(size, budget, rounds), expected)
    # the rounds are needed: taking only the first run that fits leaves budget unused in some rows
    assert not torch.equal(fill_rounds(size, budget, 1), expected)


def test_masks_drawn_for_a_seed_are_the_same_again_and_differ_across_seeds_and_ranks(tiny_encoder):
    """In training each micro-batch's masking is seeded from the step (`loop.micro_batch_seed`): a resumed
    run masks as an uninterrupted one without restoring any generator, and no two ranks share a mask."""
    import dataclasses

    import torch

    from langadapt.train.loop import micro_batch_seed

    tok, plan = _plan(tiny_encoder)
    ids = torch.tensor([tok("the man went to the city and saw the river by the old house")["input_ids"]] * 4)
    seed = micro_batch_seed(0, 3, 0)
    assert len({seed, micro_batch_seed(0, 4, 0), micro_batch_seed(0, 3, 2), micro_batch_seed(1, 3, 0)}) == 4
    chosen, corrupted = plan.draw(ids, seed)
    torch.manual_seed(123)  # the global stream plays no part
    again = plan.draw(ids, seed)
    assert torch.equal(chosen, again[0]) and torch.equal(corrupted, again[1])
    assert not torch.equal(chosen, plan.draw(ids, micro_batch_seed(0, 4, 0))[0])
    assert not torch.equal(chosen, dataclasses.replace(plan, rank=1).draw(ids, seed)[0])


def test_ranks_mask_differently_and_each_rank_the_same_again(tiny_encoder):
    """Every process draws its own masks (rank folded into the seed) from the checkpointed CPU stream."""
    import dataclasses

    import torch

    tok, plan = _plan(tiny_encoder)
    ids = torch.tensor([tok("the man went to the city and saw the river by the old house")["input_ids"]] * 4)
    rank1 = dataclasses.replace(plan, rank=1)

    def draw(p, seed):  # type: ignore[no-untyped-def]
        torch.manual_seed(seed)
        return [p.draw(ids) for _ in range(3)]  # three batches in a row

    zero, one, zero_again = draw(plan, 7), draw(rank1, 7), draw(plan, 7)
    for (c0, x0), (c1, _), (c2, x2) in zip(zero, one, zero_again):
        assert torch.equal(c0, c2) and torch.equal(x0, x2)  # a resumed run (same CPU stream) masks the same
        assert not torch.equal(c0, c1)  # another rank masks other positions
    # a resume restores the CPU stream mid-run: the batches after it are masked as without the interruption
    torch.manual_seed(7)
    plan.draw(ids)
    state = torch.get_rng_state()
    later = [plan.draw(ids) for _ in range(2)]
    torch.manual_seed(123)
    torch.set_rng_state(state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(later, [plan.draw(ids) for _ in range(2)]))


# -- packed documents (train.packed_attention: document) ------------------------------------------


def _sharpen(model):  # type: ignore[no-untyped-def]
    """Larger weights: at its initial scale (std 0.02) a tiny model barely reads its context, so
    attention that crosses documents would change its predictions by less than any tolerance."""
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.3)
    return model.eval()


def _two_documents(tok):  # type: ignore[no-untyped-def]
    from conftest import english_lines, target_docs

    from langadapt.models.loading import doc_separator_id

    sep = doc_separator_id(tok)
    a = [sep] + tok(target_docs(seed=2)[0]["text"], add_special_tokens=False)["input_ids"][:20]
    b = [sep] + tok(english_lines(1, seed=4)[0], add_special_tokens=False)["input_ids"][:17]
    return sep, a, b


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ENCODER_KINDS)  # XLM-R, RoBERTa, BERT
def test_packed_encoder_documents_do_not_attend_to_each_other(kind, attention, tmp_path):
    """A packed row predicts each document's tokens exactly as the document alone (positions included)."""
    import torch
    from transformers import AutoModelForMaskedLM

    from langadapt.models.encoder import document_inputs, mlm_logits_at
    from langadapt.models.loading import load_tokenizer
    from langadapt.train.data import document_positions

    folder = build_tiny_encoder(tmp_path / kind, kind)
    tok = load_tokenizer(str(folder))
    model = _sharpen(AutoModelForMaskedLM.from_pretrained(folder, attn_implementation=attention))
    sep, a, b = _two_documents(tok)
    packed = torch.tensor([a + b, b + a])
    positions = document_positions(packed, sep)
    assert positions[0].tolist() == list(range(len(a))) + list(range(len(b)))
    everywhere = torch.ones_like(packed, dtype=torch.bool)
    with torch.no_grad():
        got = mlm_logits_at(model, packed, select=everywhere, **document_inputs(model, positions))
        crossing = mlm_logits_at(model, packed, None, everywhere)
        alone_a = model(input_ids=torch.tensor([a])).logits[0]  # the model's own default positions
        alone_b = model(input_ids=torch.tensor([b])).logits[0]
    width = packed.shape[1]
    expected = torch.cat([alone_a, alone_b, alone_b, alone_a])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(crossing[len(a) : width], alone_b, atol=1e-3)  # without them, attention crosses


def test_mlm_objective_keeps_packed_documents_apart(tmp_path):
    """The loss of a packed row is the loss of its documents scored alone, at the same masked positions."""
    import inspect

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForMaskedLM

    from langadapt.train.data import document_positions
    from langadapt.train.mlm import masked_lm
    from langadapt.train.objectives import OBJECTIVES

    # the loop hands restarting positions only to an objective that takes them
    assert "position_ids" in inspect.signature(OBJECTIVES.get("mlm")).parameters
    folder = build_tiny_encoder(tmp_path / "xlmr", "sentencepiece")
    tok, plan = _plan(folder, mlm_probability=0.3)
    model = _sharpen(AutoModelForMaskedLM.from_pretrained(folder))
    sep, a, b = _two_documents(tok)
    packed = torch.tensor([a + b])
    torch.manual_seed(3)
    with torch.no_grad():
        loss = masked_lm(plan)(model, packed, position_ids=document_positions(packed, sep))
        torch.manual_seed(3)
        chosen, corrupted = plan.draw(packed)
        assert chosen[0, : len(a)].any() and chosen[0, len(a) :].any()  # both documents are scored
        logits = torch.cat([model(input_ids=doc).logits[0] for doc in (corrupted[:, : len(a)], corrupted[:, len(a) :])])
        expected = F.cross_entropy(logits[chosen[0]], packed[0][chosen[0]])
    torch.testing.assert_close(loss[0, 0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", PACKED_ENCODERS)
def test_every_encoder_type_said_to_take_packed_documents_does(model_type):
    """The list validation trusts: a tiny model of each type predicts a packed document as it does alone."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    from langadapt.models.encoder import document_inputs, mlm_logits_at

    sizes = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = AutoConfig.for_model(model_type, **sizes, max_position_embeddings=64, pad_token_id=1)
    if model_type == "rembert":
        config.input_embedding_size = config.output_embedding_size = 32
    torch.manual_seed(0)
    model = _sharpen(AutoModelForMaskedLM.from_config(config))
    a, b = [0, 5, 17, 33, 8, 41, 9], [0, 12, 7, 99, 23, 64, 3, 11]
    packed = torch.tensor([a + b])
    positions = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    with torch.no_grad():
        got = mlm_logits_at(
            model, packed, select=torch.ones_like(packed, dtype=torch.bool), **document_inputs(model, positions)
        )
        alone = model(input_ids=torch.tensor([b])).logits[0]
    torch.testing.assert_close(got[len(a) :], alone, atol=1e-5, rtol=1e-5)


def test_an_encoder_that_cannot_keep_packed_documents_apart_is_refused_at_validation():
    from types import SimpleNamespace

    from transformers import DistilBertConfig, XLMRobertaConfig

    from langadapt.train.adapters import config_problems
    from langadapt.train.config import TrainConfig

    def problems(config, packed):  # type: ignore[no-untyped-def]
        recipe = SimpleNamespace(train=TrainConfig(objective="mlm", method="head", packed_attention=packed))
        return [p for p in config_problems(recipe, config) if "packed_attention" in p]

    (message,) = problems(DistilBertConfig(), "document")
    assert "distilbert" in message and "set train.packed_attention: row" in message
    assert problems(DistilBertConfig(), "row") == []
    assert problems(XLMRobertaConfig(), "document") == []


def test_saved_model_folder_loads_its_tokenizer_without_the_mistral_regex_warning(tmp_path):
    """transformers 4.57.x warns about Mistral's pre-tokenizer regex for every large-vocabulary folder it saved
    (XLM-R's 250k included); only Mistral-family models can carry that regex."""
    import json
    import logging

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    from langadapt.models.loading import load_tokenizer

    raw = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100_001)} | {"<unk>": 100_001}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(tmp_path / "m")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = hf_logging.get_logger("transformers.tokenization_utils_base")
    logger.addHandler(handler)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # other tests may have quietened transformers
    try:
        for model_type, warned in (("xlm-roberta", False), ("mistral", True)):
            config = {"model_type": model_type, "transformers_version": "4.57.6"}
            (tmp_path / "m" / "config.json").write_text(json.dumps(config))
            records.clear()
            tok = load_tokenizer(str(tmp_path / "m"))
            assert any("regex" in r for r in records) == warned, (model_type, records)
    finally:
        logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)
    tok.save_pretrained(tmp_path / "again")  # the load-time switch is not written into the saved config
    assert "fix_mistral_regex" not in (tmp_path / "again" / "tokenizer_config.json").read_text()
