"""Init methods: one conformance battery for every registered method on decoders and encoders,
tied and untied, plus each method's own defining property."""

from __future__ import annotations

import dataclasses
import gzip

import pytest
import torch
from conftest import ENGLISH, save_tiny_llama, target_docs

from langadapt.corpus import flow as corpus
from langadapt.documents import languages, read_texts
from langadapt.init import flow as embed_init
from langadapt.init.config import InitConfig
from langadapt.init.methods import INIT_METHODS, InitContext, InitInputs, decompose
from langadapt.rundir import RunDir, read_json
from langadapt.tokenizer import flow as tokenizer


def target_words() -> list[str]:
    words: list[str] = []
    for doc in target_docs():
        for w in doc["text"].lower().replace(".", "").split():
            if w not in words:
                words.append(w)
    return words


def _tiny_recipe(corpus_files, model_dir, run_dir, **init):
    from conftest import tiny_recipe_dict

    from langadapt.recipe import Recipe

    return Recipe.from_dict(tiny_recipe_dict(corpus_files, model_dir, run_dir, init=init))


@pytest.fixture(scope="module")
def stage_dir(tiny_model, corpus_files, tmp_path_factory) -> dict:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("init")
    recipe = _tiny_recipe(corpus_files, tiny_model, root / "run")
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    tokenizer.run(recipe, rd)
    new_tok = AutoTokenizer.from_pretrained(rd.path("tokenizer"))
    dictionary = root / "nya-eng.tsv"
    dictionary.write_text("".join(f"{e}\t{t}\n" for e, t in zip(ENGLISH, target_words())), encoding="utf-8")
    helper = save_tiny_llama(root / "helper", new_tok)
    return {"rd": rd, "tiny_model": tiny_model, "dictionary": dictionary, "helper": helper, "new_tok": new_tok}


def context_for(stage_dir: dict, method: str, **config) -> InitContext:
    from transformers import AutoTokenizer

    rd = stage_dir["rd"]
    options = {"vector_epochs": 2, "vector_dim": 16, "ofa_rank": 8}
    if method == "wechsel":
        options["dictionary"] = str(stage_dir["dictionary"])
    if method == "clp":
        options["helper_model"] = str(stage_dir["helper"])
    options.update(config)
    target, replay = languages(rd)
    return InitContext(
        config=InitConfig(method=method, **options),
        seed=0,
        old_tokenizer=AutoTokenizer.from_pretrained(stage_dir["tiny_model"]),
        new_tokenizer=stage_dir["new_tok"],
        cache=rd.root / "cache" / "init",
        target_texts=lambda: read_texts(rd, target, "train"),
        source_texts=lambda: read_texts(rd, replay, "train"),
    )


def build_model(kind: str, vocab: int, tie: bool):
    """Tiny decoder or encoder (with a masked-LM head and its bias) built from a config."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        LlamaConfig,
        LlamaForCausalLM,
        XLMRobertaConfig,
        XLMRobertaForMaskedLM,
    )

    torch.manual_seed(0)
    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, tie_word_embeddings=tie, num_key_value_heads=2, **size))
    if kind == "bert":
        return BertForMaskedLM(BertConfig(vocab_size=vocab, tie_word_embeddings=tie, **size))
    return XLMRobertaForMaskedLM(XLMRobertaConfig(vocab_size=vocab, tie_word_embeddings=tie, **size))


MODELS = [("llama", True), ("llama", False), ("bert", True), ("xlm-roberta", False)]


@pytest.mark.parametrize("kind,tie", MODELS, ids=[f"{k}-{'tied' if t else 'untied'}" for k, t in MODELS])
@pytest.mark.parametrize("method", INIT_METHODS.names())
def test_method_conformance(stage_dir, method, kind, tie):
    """Every method, every model shape: old rows copied exactly, new rows finite and explained."""
    ctx = context_for(stage_dir, method)
    n_old = len(ctx.old_tokenizer)
    model = build_model(kind, n_old, tie)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_head = model.get_output_embeddings()
    old_out = old_head.weight.detach().clone()
    old_bias = None if getattr(old_head, "bias", None) is None else old_head.bias.detach().clone()

    report = embed_init.initialise(model, ctx, method).report

    n_new = len(ctx.new_tokenizer)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    assert emb.shape[0] == n_new and head.weight.shape[0] == n_new and model.config.vocab_size == n_new
    assert torch.equal(emb[:n_old], old_in) and torch.isfinite(emb).all()
    assert report["initialised_rows"] == n_new - n_old == len(report["tokens"]) > 0
    assert report["tied_embeddings"] is tie and report["output_head_initialised"] is (not tie)
    if tie:
        assert head.weight.data_ptr() == emb.data_ptr()
    else:
        assert torch.equal(head.weight[:n_old], old_out) and torch.isfinite(head.weight).all()
        assert not torch.equal(head.weight[n_old:], emb[n_old:])  # its own space, not a copy of the input rows
    if old_bias is not None:
        assert report["output_bias_initialised"] and torch.equal(head.bias[:n_old], old_bias)
        assert torch.isfinite(head.bias).all()
    assert set(report["norm_check"]) == {"input"} | ({"output"} if not tie else set())
    combines = method not in ("hf-resize", "random", "mean", "mvn")
    for entry in report["tokens"]:
        assert entry["token"] == ctx.new_tokenizer.convert_ids_to_tokens(entry["id"])
        assert entry["method"] in (method, "fvt", "mean")
        if combines and entry["method"] != "mean":
            assert entry["sources"], entry
    if combines and method != "fvt":
        assert report["rows_by_method"].get(method, 0) > report["initialised_rows"] // 2, report["rows_by_method"]
    if method == "wechsel":  # what the method reports reaches init_report.json under its name
        assert report["wechsel"]["pairs_used"] >= 20 and report["wechsel"]["dictionary"].startswith("file")


@pytest.mark.parametrize("method", INIT_METHODS.names())
def test_methods_are_deterministic_under_the_seed(stage_dir, method):
    rows = []
    for _ in range(2):
        ctx = context_for(stage_dir, method)
        model = build_model("llama", len(ctx.old_tokenizer), tie=False)
        embed_init.initialise(model, ctx, method)
        rows.append((model.get_input_embeddings().weight.detach().clone(), model.lm_head.weight.detach().clone()))
    assert torch.equal(rows[0][0], rows[1][0]) and torch.equal(rows[0][1], rows[1][1])


def test_fvt_is_the_mean_of_pieces_and_falls_back_to_mean():
    from langadapt.init.basic import init_fvt

    old = torch.randn(10, 4)
    out = init_fvt(InitInputs(old, [[1, 3], []], torch.Generator(), 0.02))
    assert torch.allclose(out.rows[0], old[[1, 3]].mean(0)) and torch.allclose(out.rows[1], old.mean(0))
    assert out.how == ["fvt", "mean"]


def test_sparsemax_is_a_sparse_distribution():
    from langadapt.init.focus import sparsemax

    p = sparsemax(torch.tensor([[0.9, 0.85, 0.2, -0.5], [0.3, 0.3, 0.3, 0.3]], dtype=torch.float64))
    assert torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    assert p[0, 2] == 0 and p[0, 3] == 0 and p[0, 0] > p[0, 1] > 0
    assert torch.allclose(p[1], torch.full((4,), 0.25, dtype=torch.float64))


def test_omp_recovers_a_sparse_combination():
    from langadapt.init.omp import omp

    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(200, 40, generator=g, dtype=torch.float64)
    target = 0.7 * atoms[5] - 1.3 * atoms[17] + 0.4 * atoms[150]
    idx, coef = omp(target.unsqueeze(0), atoms, 3)
    found = {int(i): float(c) for i, c in zip(idx[0], coef[0])}
    assert set(found) == {5, 17, 150}
    assert abs(found[5] - 0.7) < 1e-8 and abs(found[17] + 1.3) < 1e-8 and abs(found[150] - 0.4) < 1e-8


def test_procrustes_recovers_a_rotation():
    import numpy as np

    from langadapt.init.wechsel import procrustes

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert np.allclose(procrustes(x, x @ q), q)


def test_focus_rows_are_convex_combinations_of_anchor_rows(stage_dir):
    ctx = context_for(stage_dir, "focus")
    model = build_model("llama", len(ctx.old_tokenizer), tie=True)
    old = model.get_input_embeddings().weight.detach().clone()
    report = embed_init.initialise(model, ctx, "focus").report
    rows = model.get_input_embeddings().weight.detach().double()
    vocab = ctx.old_tokenizer.get_vocab()
    focus_rows = [e for e in report["tokens"] if e["method"] == "focus"]
    assert focus_rows
    for entry in focus_rows:
        weights = torch.tensor([w for _, w in entry["sources"]], dtype=torch.float64)
        assert (weights > 0).all() and len(weights) == min(entry["combined"], 32)
        if entry["combined"] <= 32:  # the report lists every source: they rebuild the row
            assert abs(float(weights.sum()) - 1) < 1e-3
            expected = sum(w * old[vocab[t]].double() for t, w in entry["sources"])
            assert torch.allclose(rows[entry["id"]], expected, atol=1e-3)


def test_ofa_rows_lie_in_the_principal_subspace_and_factors_are_saved(stage_dir, tmp_path):
    """OFA's split, as the paper makes it: primitives S_k V_k^T, coordinates U_k; no saving claimed untrained."""
    from safetensors.torch import load_file

    ctx = context_for(stage_dir, "ofa", ofa_rank=8)
    model = build_model("llama", len(ctx.old_tokenizer), tie=False)
    old = model.get_input_embeddings().weight.detach().double().clone()
    done = embed_init.initialise(model, ctx, "ofa")
    report = done.report
    embed_init.save_factors(model, ctx, done.factors, tmp_path, report)
    factors = load_file(str(tmp_path / "ofa_factors.safetensors"))
    prims, coords = factors["input.primitives"], factors["input.coordinates"]
    assert prims.shape == (8, 32) and coords.shape == (len(ctx.new_tokenizer), 8)
    n_old = len(ctx.old_tokenizer)
    u, s, vh = torch.linalg.svd(old, full_matrices=False)
    assert torch.allclose(prims.double(), s[:8, None] * vh[:8], atol=1e-5)  # P = S_k V_k^T
    assert torch.allclose(coords[:n_old].double().abs(), u[:, :8].abs(), atol=1e-4)  # A = U_k (signs as P's)
    new_rows = model.get_input_embeddings().weight[n_old:].detach()
    assert torch.allclose(coords[n_old:] @ prims, new_rows, atol=1e-5)  # new rows are exactly A P
    entry = report["ofa"]["matrices"]["input"]
    assert entry["factorised_parameters"] == coords.numel() + prims.numel() and "output" in report["ofa"]["matrices"]
    assert report["ofa"]["trained_factorised"] is False and "saving" not in entry  # no claim without the trained form
    assert "output.primitives" in factors and "output.coordinates" in factors


def test_ofa_saves_factors_without_new_tokens(stage_dir, tmp_path):
    """A kept vocabulary still trains in factorised form: the factors are the old matrices'."""
    from safetensors.torch import load_file

    ctx = context_for(stage_dir, "ofa", ofa_rank=8)
    ctx = dataclasses.replace(ctx, new_tokenizer=ctx.old_tokenizer)
    model = build_model("xlm-roberta", len(ctx.old_tokenizer), tie=True)
    done = embed_init.initialise(model, ctx, "ofa")
    report = done.report
    embed_init.save_factors(model, ctx, done.factors, tmp_path, report, trained=True)
    factors = load_file(str(tmp_path / "ofa_factors.safetensors"))
    assert report["initialised_rows"] == 0 and set(factors) == {"input.coordinates", "input.primitives"}
    assert report["ofa"]["matrices"]["input"]["saving"] == round(
        1 - (len(ctx.old_tokenizer) + 32) * 8 / (len(ctx.old_tokenizer) * 32), 4
    )


def test_token_sources_from_the_tokenizer_stage_set_the_pieces(stage_dir):
    ctx = context_for(stage_dir, "focus")
    model = build_model("llama", len(ctx.old_tokenizer), tie=True)
    old = model.get_input_embeddings().weight.detach().clone()
    n_old = len(ctx.old_tokenizer)
    token = ctx.new_tokenizer.convert_ids_to_tokens(n_old + 1)
    report = embed_init.initialise(model, ctx, "focus", {token: [3, 7, 11], "init_hint": "max"}).report
    assert torch.equal(model.get_input_embeddings().weight[n_old + 1], old[[3, 7, 11]].max(0).values)
    entry = next(e for e in report["tokens"] if e["token"] == token)
    assert entry["method"] == "translit-max" and len(entry["sources"]) == 3
    assert report["transliteration"] == {"tokens": 1, "combine": "max"}


def test_wordpiece_continuations_decompose_as_continuations():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "nd": 1, "##nd": 2, "##i": 3, "i": 4, "##po": 5}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    assert decompose("##ndipo", tok) == [2, 3, 5]
    assert decompose("ndi", tok) == [1, 3]
    assert decompose("xyz", tok) == []  # unknown characters: nothing to build from


def test_dictd_dictionary_is_read_and_oriented(tmp_path):
    from langadapt.init.align import _b64, orient, read_dictionary

    def enc(n: int) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        s = ""
        while True:
            s = alphabet[n % 64] + s
            n //= 64
            if not n:
                return s

    entries = [("00-database-info", "about\n"), ("nyumba", "nyumba /ɲumba/\n1. house, home\n2. (building) hut\n")]
    entries.append(("mtu", "mtu\nperson; man\nNote: plural watu\n"))
    body, index = b"", []
    for head, text in entries:
        raw = text.encode()
        index.append(f"{head}\t{enc(len(body))}\t{enc(len(raw))}\n")
        body += raw
    (tmp_path / "freedict-swh-eng.index").write_text("".join(index), encoding="utf-8")
    with gzip.open(tmp_path / "freedict-swh-eng.dict.dz", "wb") as f:
        f.write(body)
    assert _b64(enc(12345)) == 12345
    pairs = read_dictionary(tmp_path / "freedict-swh-eng.index")
    assert pairs == [("nyumba", "house"), ("nyumba", "home"), ("nyumba", "hut"), ("mtu", "person"), ("mtu", "man")]
    flipped = orient(pairs, source_words={"house", "man", "home"}, target_words={"nyumba", "mtu"})
    assert flipped[0] == ("house", "nyumba")


def test_a_dictionary_is_induced_from_parallel_text(tmp_path):
    import random

    from langadapt.init.align import induce

    rng = random.Random(0)
    cipher = {w: "k" + w[::-1] + "a" for w in ENGLISH}
    src, tgt = [], []
    for _ in range(300):
        sent = [rng.choice(ENGLISH) for _ in range(rng.randint(4, 9))]
        src.append(" ".join(sent))
        tgt.append(" ".join(cipher[w] for w in sent))
    pairs, stats = induce(src, tgt, tmp_path)
    correct = sum(1 for s, t in pairs if cipher.get(s) == t)
    assert len(pairs) >= 0.8 * len(set(ENGLISH)) and correct >= 0.9 * len(pairs)
    again, cached = induce(src, tgt, tmp_path)
    assert again == pairs and cached["cached"] == 1


def test_stage_writes_a_model_folder_and_reuses_cached_vectors(stage_dir, tiny_recipe):
    from transformers import AutoModelForCausalLM

    rd = stage_dir["rd"]  # corpus and tokenizer done; same inputs, so they are skipped
    recipe = tiny_recipe(run_dir=str(rd.root), init={"method": "focus", "vector_epochs": 2, "vector_dim": 24})
    for stage in (corpus, tokenizer, embed_init):
        stage.run(recipe, rd)
    model = AutoModelForCausalLM.from_pretrained(rd.path("init"))
    report = read_json(rd.path("init") / "init_report.json")
    assert model.get_input_embeddings().weight.shape[0] == report["vocab_size"] and report["tied_embeddings"]
    assert report["rows_by_method"].get("focus", 0) > 0 and len(report["tokens"]) == report["initialised_rows"]
    cached = sorted((rd.root / "cache" / "init").glob("tokens-*.safetensors"))
    assert cached
    stamps = [p.stat().st_mtime_ns for p in cached]
    embed_init.run(recipe, rd, force=True)
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # fastText not retrained
    again = AutoModelForCausalLM.from_pretrained(rd.path("init"))
    assert torch.equal(again.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_compare_scores_other_methods_and_keeps_the_chosen_model(stage_dir, tiny_recipe):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langadapt.documents import leading_documents
    from langadapt.init.compare import score

    rd = stage_dir["rd"]
    recipe = tiny_recipe(run_dir=str(rd.root), init={"method": "fvt", "compare": ["random", "fvt", "mean"]})
    embed_init.run(recipe, rd)
    report = read_json(rd.path("init") / "init_report.json")
    rows = report["comparison"]
    assert [r["method"] for r in rows] == ["fvt", "random", "mean"]  # the chosen one first, listed once
    assert [r["chosen"] for r in rows] == [True, False, False] and sum(r["best"] for r in rows) >= 1
    key = "nya held-out bits/byte"
    best = min(r[key] for r in rows)
    assert all(r["best"] == (r[key] == best) for r in rows)
    # the kept model is the chosen method's, and its row is its own score on the same held-out text
    model = AutoModelForCausalLM.from_pretrained(rd.path("init"))
    assert report["method"] == "fvt" and report["rows_by_method"].get("fvt", 0) > 0
    texts = leading_documents(read_texts(rd, "nya", "heldout"), recipe.init.compare_chars)
    tok = AutoTokenizer.from_pretrained(rd.path("init"))
    assert score(model, tok, texts, recipe) == pytest.approx(rows[0][key], abs=1e-4)
    # mean gives every new row the same vector, random does not: the methods really ran
    assert len({r[key] for r in rows}) == 3


def test_compare_names_bad_methods_at_validation(tiny_recipe):
    from langadapt.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        tiny_recipe(init={"method": "fvt", "compare": ["focsu", "wechsel"]})
    assert "init.compare[0]: unknown init-methods 'focsu'" in str(e.value)
    assert "init.compare[1] (wechsel): init.dictionary: wechsel needs a bilingual dictionary" in str(e.value)


@pytest.mark.parametrize(
    "init,expected",
    [
        ({"method": "wechsel"}, "wechsel needs a bilingual dictionary"),
        ({"method": "clp"}, "clp needs a small model already trained on the target language"),
        ({"method": "ofa", "ofa_rank": 64}, "larger than the model's hidden size 32"),
        ({"method": "wechsel", "dictionary": "missing.tsv"}, "file not found: missing.tsv"),
        ({"method": "omp", "helper_model": "/no/such/helper"}, "init.helper_model: folder not found"),
        ({"method": "focus", "neighbours": 0}, "init.neighbours: must be >= 1"),
    ],
)
def test_bad_init_sections_fail_at_validation(tiny_recipe, init, expected):
    from langadapt.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        tiny_recipe(init=init)
    assert expected in str(e.value)


def test_ofa_run_exports_as_a_plain_transformers_model(tiny_recipe, tmp_path):
    """OFA's factors are a training aid: the exported folder is an ordinary model with the run's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langadapt import pipeline
    from langadapt.export import export
    from langadapt.models.loading import load_model

    init = {"method": "ofa", "ofa_rank": 8, "vector_epochs": 1, "vector_dim": 16}
    recipe = tiny_recipe(run_dir=str(tmp_path / "run"), init=init, train={"max_steps": 2, "save_every": 2})
    rd = RunDir(pipeline.run(recipe, ("corpus", "tokenizer", "init", "train")).run_dir)
    report = read_json(rd.path("init") / "init_report.json")
    assert report["rows_by_method"].get("ofa", 0) > 0 and report["ofa"]["trained_factorised"] is False
    folder = export(rd.root, tmp_path / "exported")
    assert not list(folder.glob("ofa_factors*"))  # nothing beyond a normal model folder is needed
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    trained = load_model(str(rd.path("train") / "final")).eval()
    ids = tok(read_texts(rd, "nya", "heldout")[0][:200], return_tensors="pt")["input_ids"]
    new_ids = set(read_json(rd.path("tokenizer") / "metrics.json")["new_token_ids"])
    assert new_ids & set(ids[0].tolist())  # the text goes through OFA-initialised rows
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, trained(ids).logits, atol=1e-4)


# --- the baselines say what they are ------------------------------------------------------------


def test_hf_resize_gives_what_transformers_resize_gives():
    """hf-resize is the library's own default resize: the same rows as model.resize_token_embeddings(n)."""
    import copy

    from langadapt.init.basic import init_hf_resize

    model = build_model("llama", 120, tie=True)
    old = model.get_input_embeddings().weight.detach().clone()
    generator = torch.Generator().manual_seed(3)
    rows = init_hf_resize(InitInputs(old, [[]] * 30, generator, 0.02)).rows
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(3)))
    user = copy.deepcopy(model)
    torch.manual_seed(seed)
    user.resize_token_embeddings(150)  # as a user would: transformers' defaults
    assert torch.equal(rows, user.get_input_embeddings().weight[120:].detach())
    # in effect the mean: transformers samples with 1e-9 of the old rows' covariance
    assert (rows - old.mean(0)).abs().max() < 1e-3 * old.std()


def test_hf_resize_untied_head_and_bias_stay_at_their_means():
    from langadapt.init.basic import init_hf_resize

    old = torch.randn(200, 16, dtype=torch.float32) + 3.0
    for space, matrix in (("output", old), ("output-bias", old[:, :1])):
        rows = init_hf_resize(InitInputs(matrix, [[]] * 5, torch.Generator().manual_seed(0), 0.02, space=space)).rows
        assert rows.shape == (5, matrix.shape[1]) and (rows - matrix.mean(0)).abs().max() < 1e-3
        if space == "output":  # sampled, not the mean itself (a bias's 1e-9 spread is below float32's resolution)
            assert not torch.equal(rows[0], rows[1])


def test_mvn_samples_with_the_old_rows_covariance():
    """mvn is the old rows' normal at full scale, not the mean (which 1e-5 of the covariance amounts to)."""
    from langadapt.init.basic import init_mvn

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)
    old = (torch.randn(3000, 6, generator=g, dtype=torch.float64) @ mix + 2.0).float()
    rows = init_mvn(InitInputs(old, [[]] * 4000, torch.Generator().manual_seed(1), 0.02)).rows.double()
    expected = torch.cov(old.double().T)
    assert torch.allclose(rows.mean(0), old.double().mean(0), atol=0.15)
    assert torch.allclose(torch.cov(rows.T), expected, atol=0.1 * float(expected.diagonal().max()))


def test_random_is_the_models_own_initialiser():
    from langadapt.init.basic import init_random

    old = torch.randn(50, 32) + 5.0
    rows = init_random(InitInputs(old, [[]] * 4000, torch.Generator().manual_seed(0), 0.02)).rows
    assert abs(float(rows.mean())) < 1e-3 and abs(float(rows.std()) - 0.02) < 1e-3
    bias = init_random(InitInputs(old[:, :1], [[]] * 7, torch.Generator(), 0.02, space="output-bias")).rows
    assert torch.equal(bias, torch.zeros(7, 1))  # a fresh head's bias is zero


def test_list_init_methods_says_what_each_baseline_is():
    from typer.testing import CliRunner

    from langadapt.cli import app

    out = CliRunner().invoke(app, ["list", "init-methods"]).output
    names = INIT_METHODS.names()
    lines: dict[str, str] = {}
    for line in out.splitlines():  # an entry may wrap onto further lines
        if line.split() and line.split()[0] in names:
            current = line.split()[0]
            lines[current] = ""
        lines[current] += " " + line.strip()
    assert "resize_token_embeddings(n)" in lines["hf-resize"] and "1e-9" in lines["hf-resize"]
    assert "mean_resizing=False" in lines["random"]
    assert "full scale" in lines["mvn"]
    assert "every overlapping token" in lines["focus"]


# --- FOCUS as the paper does it ---------------------------------------------------------------


def _simplex_projection(z: list[float]) -> list[float]:
    """Sparsemax written from its definition: the Euclidean projection of z onto the simplex."""
    ordered = sorted(z, reverse=True)
    total, tau = 0.0, 0.0
    for k, value in enumerate(ordered, start=1):
        total += value
        if value - (total - 1) / k > 0:
            tau = (total - 1) / k
    return [max(v - tau, 0.0) for v in z]


def focus_context(tmp_path, anchors, queries, **config) -> tuple[InitContext, list[str]]:
    """A stage context whose new-token space is given: anchors a0.. (old tokens) and new tokens n0.."""
    import types

    import numpy as np

    from langadapt.init.vectors import Space

    old_vocab = {f"a{i}": i for i in range(len(anchors))}
    new = [f"n{i}" for i in range(len(queries))]
    vocab = {**old_vocab, **{t: len(old_vocab) + i for i, t in enumerate(new)}}
    ctx = InitContext(
        config=InitConfig(method="focus", **config),
        seed=0,
        old_tokenizer=types.SimpleNamespace(get_vocab=lambda: dict(old_vocab)),
        new_tokenizer=types.SimpleNamespace(get_vocab=lambda: dict(vocab)),
        cache=tmp_path,
        target_texts=lambda: [],
        source_texts=lambda: [],
    )
    vectors = np.concatenate([anchors, queries]).astype(np.float32)
    ctx.memo["new-token-space"] = Space(list(vocab), vectors, np.ones(len(vocab), dtype=bool))
    return ctx, new


def test_focus_takes_sparsemax_over_every_overlapping_token(tmp_path):
    """The default equals a dense sparsemax over all anchors, and keeps a support above ten where the
    similarities are close (a top-10 truncation would cut it)."""
    import numpy as np

    from langadapt.init.focus import init_focus

    rng = np.random.default_rng(0)
    centre = rng.normal(size=8)
    anchors = centre + 0.05 * rng.normal(size=(40, 8))  # forty anchors almost equally similar to n0
    queries = np.stack([centre + 0.05 * rng.normal(size=8), rng.normal(size=8)])
    ctx, tokens = focus_context(tmp_path, anchors, queries)
    old = torch.randn(40, 16, dtype=torch.float64)
    out = init_focus(InitInputs(old, [[0], [1]], torch.Generator(), 0.02, tokens, "input", ctx))
    mix = out.mixture
    assert out.how == ["focus", "focus"]
    for i, q in enumerate(queries.astype(np.float32).astype(np.float64)):
        a = anchors.astype(np.float32).astype(np.float64)
        sims = (a @ q) / (np.linalg.norm(a, axis=1) * np.linalg.norm(q))
        dense = torch.tensor(_simplex_projection(list(sims)), dtype=torch.float64)
        assert torch.allclose(out.rows[i], dense @ old, atol=1e-12)
        ids, weights = mix.row(i)
        assert len(ids) == int((dense > 0).sum())  # only the non-zero weights are kept
        sparse = torch.zeros(40, dtype=torch.float64).index_put_((ids,), weights)
        assert torch.allclose(sparse, dense, atol=1e-12)
    assert mix.sizes()[0] > 10  # a top-10 truncation could not give this row its weights


def test_focus_top_k_truncates_before_sparsemax(tmp_path):
    import numpy as np

    from langadapt.init.focus import init_focus, sparsemax

    rng = np.random.default_rng(0)
    centre = rng.normal(size=8)
    anchors = centre + 0.05 * rng.normal(size=(40, 8))
    ctx, tokens = focus_context(tmp_path, anchors, centre[None, :] + 0.05 * rng.normal(size=(1, 8)), focus_top_k=10)
    out = init_focus(InitInputs(torch.randn(40, 4), [[0]], torch.Generator(), 0.02, tokens, "input", ctx))
    ids, weights = out.mixture.row(0)
    q = torch.from_numpy(ctx.memo["new-token-space"].vectors[40]).double()
    a = torch.from_numpy(ctx.memo["new-token-space"].vectors[:40]).double()
    sims = torch.nn.functional.cosine_similarity(a, q.unsqueeze(0))
    top, idx = sims.topk(10)
    expected = sparsemax(top)
    assert sorted(ids.tolist()) == sorted(idx[expected > 0].tolist()) and len(ids) <= 10
    assert abs(float(weights.sum()) - 1) < 1e-12


def test_bad_focus_top_k_fails_at_validation(tiny_recipe):
    from langadapt.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        tiny_recipe(init={"method": "focus", "focus_top_k": -1})
    assert "init.focus_top_k: must be >= 0" in str(e.value)


# --- WECHSEL as the paper does it -------------------------------------------------------------


def wechsel_context(tmp_path, monkeypatch, source, target):
    """Word spaces given (source words w0.., target words t0..), a dictionary pairing w_i with t_i."""
    import numpy as np
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from langadapt.init import wechsel
    from langadapt.init.vectors import Space

    n = len(source)
    src_words, tgt_words = [f"w{i}" for i in range(n)], [f"t{i}" for i in range(n)]
    old_vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(src_words)}}
    new_vocab = {**old_vocab, **{t: n + 1 + i for i, t in enumerate(tgt_words)}}

    def tok(vocab):
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "[UNK]")), unk_token="[UNK]")

    spaces = {
        "source-words": Space(src_words, source, np.ones(n, dtype=bool)),
        "target-words": Space(tgt_words, target, np.ones(n, dtype=bool)),
    }
    monkeypatch.setattr(wechsel, "word_space", lambda cache, texts, dim, epochs, seed, name, extra: spaces[name])
    dictionary = tmp_path / "dict.tsv"
    dictionary.write_text("".join(f"{s}\t{t}\n" for s, t in zip(src_words, tgt_words)), encoding="utf-8")
    return InitContext(
        config=InitConfig(method="wechsel", dictionary=str(dictionary)),
        seed=0,
        old_tokenizer=tok(old_vocab),
        new_tokenizer=tok(new_vocab),
        cache=tmp_path,
        target_texts=lambda: ["t0"],
        source_texts=lambda: ["w0"],
    )


def test_wechsel_aligns_raw_vectors_in_float64(tmp_path, monkeypatch):
    """A target space that is a rotation of the source space is recovered to 1e-10: the map is
    fitted on the raw vectors (not normalised, not centred), and the old tokens' vectors are
    the source vectors mapped by it."""
    import numpy as np

    from langadapt.init.wechsel import aligned_spaces

    rng = np.random.default_rng(0)
    source = rng.normal(size=(60, 12)) + 4.0  # far from centred, rows of different norms
    rotation, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    ctx = wechsel_context(tmp_path, monkeypatch, source, source @ rotation)
    aligned = aligned_spaces(ctx)
    assert np.abs(aligned.map - rotation).max() < 1e-10
    assert np.abs(aligned.old[1:] - source @ rotation).max() < 1e-10  # id 0 is [UNK], which spells nothing
    assert aligned.old_ok.tolist() == [False] + [True] * 60
    assert aligned.report["pairs_used"] == 60


def test_wechsel_alignment_is_computed_in_float64(tmp_path, monkeypatch):
    """fastText gives float32 vectors; the orthogonal map is still orthogonal to float64 precision."""
    import numpy as np

    from langadapt.init.wechsel import aligned_spaces

    rng = np.random.default_rng(1)
    source = (rng.normal(size=(80, 16)) * np.logspace(0, 3, 16)).astype(np.float32)  # ill-conditioned
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    target = (source.astype(np.float64) @ rotation).astype(np.float32)
    aligned = aligned_spaces(wechsel_context(tmp_path, monkeypatch, source, target))
    assert aligned.map.dtype == np.float64 and aligned.old.dtype == np.float64
    assert np.abs(aligned.map.T @ aligned.map - np.eye(16)).max() < 1e-12


# --- what a token spells, per tokenizer family ------------------------------------------------


def _fast(tk, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tk, **special)


@pytest.mark.parametrize("decoder", [True, False], ids=["with-decoder", "without-decoder"])
def test_byte_level_surfaces_decode_the_byte_alphabet(decoder):
    """Byte-level tokens are bytes: 'Ġ' is a space, 'Ã©' is é, a lone byte of a character spells
    nothing, and '##' or '▁' are ordinary text there."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    from langadapt.init.tokens import surfaces

    alphabet = bytes_to_unicode()

    def spell(text: str | bytes) -> str:
        raw = text if isinstance(text, bytes) else text.encode()
        return "".join(alphabet[b] for b in raw)

    texts = ["ndi", " Ndipo", "é", " é", "##ab", "▁x", b"\xc3", b"\xa9", b"nd\xc3", " ", "<|endoftext|>"]
    tokens = [t if t == "<|endoftext|>" else spell(t) for t in texts]
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, []))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if decoder:
        tk.decoder = decoders.ByteLevel()
    tok = _fast(tk, eos_token="<|endoftext|>")
    assert surfaces(tok, tokens) == ["ndi", "ndipo", "é", "é", "##ab", "▁x", "", "", "nd", "", ""]


def test_sentencepiece_surfaces_replace_the_space_mark_and_read_byte_pieces():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from langadapt.init.tokens import surfaces

    pieces = ["<unk>", "▁Ndipo", "ndi", "##po", "▁", "<0x41>", "<0xC3>", "é"]
    tk = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=0, byte_fallback=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    tok = _fast(tk, unk_token="<unk>")
    assert surfaces(tok, pieces) == ["", "ndipo", "ndi", "##po", "", "a", "", "é"]


def test_wordpiece_surfaces_drop_only_the_continuation_mark():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from langadapt.init.tokens import surfaces

    vocab = {"[UNK]": 0, "Ndi": 1, "##po": 2, "##": 3, "▁x": 4, "[CLS]": 5}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece()
    tok = _fast(tk, unk_token="[UNK]", cls_token="[CLS]")
    assert surfaces(tok, list(vocab)) == ["", "ndi", "po", "##", "▁x", ""]


def test_similarity_searches_on_an_explicit_cpu_device_give_what_they_gave(tmp_path, monkeypatch):
    """init.device moves the similarity searches (focus, wechsel, clp, omp) to a device: named explicitly, the CPU
    gives the very figures the default placement gives, and the stage context's device reaches the search."""
    import numpy as np

    from langadapt.init import focus
    from langadapt.init.omp import omp

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    queries, anchors = torch.randn(30, 12, generator=g, dtype=torch.float64), torch.randn(50, 12, generator=g)
    anchors = anchors.double()
    for a, b in zip(focus.nearest(queries, anchors, 5), focus.nearest(queries, anchors, 5, cpu)):
        assert torch.equal(a, b)
    for top_k in (0, 7):
        plain, placed = (
            focus.sparsemax_rows(queries, anchors, top_k),
            focus.sparsemax_rows(queries, anchors, top_k, cpu),
        )
        assert all(torch.equal(x, y) for x, y in zip(plain[0] + plain[1], placed[0] + placed[1]))
    for a, b in zip(omp(queries, anchors, 4), omp(queries, anchors, 4, cpu)):
        assert torch.equal(a, b)

    rng = np.random.default_rng(0)
    ctx, tokens = focus_context(tmp_path, rng.normal(size=(20, 8)), rng.normal(size=(3, 8)))
    seen = []
    real = focus.sparsemax_rows
    monkeypatch.setattr(focus, "sparsemax_rows", lambda *a: seen.append(a[-1]) or real(*a))
    old = torch.randn(20, 4, dtype=torch.float64)
    rows = [
        focus.init_focus(InitInputs(old, [[0], [1], [2]], torch.Generator(), 0.02, tokens, "input", c)).rows
        for c in (ctx, dataclasses.replace(ctx, device=cpu, memo=dict(ctx.memo)))
    ]
    assert seen == [None, cpu] and torch.equal(rows[0], rows[1])


def test_init_device_is_checked_and_left_out_of_the_fingerprint(corpus_files, tiny_model, tmp_path):
    import types

    from langadapt.errors import ConfigError

    assert embed_init.init_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert embed_init.init_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError) as err:
        _tiny_recipe(corpus_files, tiny_model, tmp_path / "run", device="mps")
    assert any("init.device" in p and "float64" in p for p in err.value.problems)
    rd = types.SimpleNamespace(fingerprint_of=lambda stage: f"{stage}-fingerprint")
    here, there = (
        embed_init.inputs(_tiny_recipe(corpus_files, tiny_model, tmp_path / "run", device=d), rd)
        for d in ("auto", "cpu")
    )
    assert here == there and "device" not in here["config"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_similarity_searches_on_a_gpu_match_the_cpu():
    from langadapt.init import focus
    from langadapt.init.omp import omp

    g = torch.Generator().manual_seed(0)
    queries, anchors = torch.randn(300, 12, generator=g).double(), torch.randn(500, 12, generator=g).double()
    gpu = torch.device("cuda")
    (s_cpu, i_cpu), (s_gpu, i_gpu) = focus.nearest(queries, anchors, 5), focus.nearest(queries, anchors, 5, gpu)
    assert torch.equal(i_cpu, i_gpu) and torch.allclose(s_cpu, s_gpu, atol=1e-12)
    for a, b in zip(focus.sparsemax_rows(queries, anchors, 0), focus.sparsemax_rows(queries, anchors, 0, gpu)):
        assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(a, b))
    (p_cpu, c_cpu), (p_gpu, c_gpu) = omp(queries, anchors, 4), omp(queries, anchors, 4, gpu)
    assert torch.equal(p_cpu, p_gpu) and torch.allclose(c_cpu, c_gpu, atol=1e-8)
