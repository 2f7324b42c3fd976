"""Downstream tasks, retrieval and alignment on tiny models and tiny data sets.

Metrics are checked against hand-computed values; every registered task kind runs through
the same table; bad task data fails with one error naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from langadapt.errors import InputError
from langadapt.evaluate.config import TaskConfig
from langadapt.evaluate.embed import Encoder, layer_index
from langadapt.evaluate.tasks import retrieval as R
from langadapt.evaluate.tasks import tag as T
from langadapt.evaluate.tasks.base import TASKS, TaskContext, builtin_data, load_data

TOPICS = {
    "royal": "king queen crown throne palace prince royal court servant lord",
    "river": "river water fish boat shore rain lake stream flood bank",
}


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def ctx_for(tiny, languages=("nya", "eng"), source="eng") -> TaskContext:
    model, tok = tiny
    return TaskContext("base", model, tok, Encoder(model, tok), list(languages), source)


def topic_files(folder: Path, n_train: int = 12, n_test: int = 6) -> Path:
    """Two topics with disjoint vocabularies in two 'languages' (the second upper-cased)."""
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for lang, case in (("eng", str.lower), ("nya", str.upper)):
        for split, n in (("train", n_train), ("test", n_test)):
            rows = []
            for label, words in TOPICS.items():
                for i in range(n):
                    text = " ".join(rng.choice(words.split()) for _ in range(8))
                    rows.append({"id": f"{label}{i}", "text": case(text), "label": label})
            (folder / f"{lang}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def bitext(shift: int = 0):  # type: ignore[no-untyped-def]
    """Aligned pairs in two 'languages': nya says each English sentence with its words in reverse order.

    The texts differ in both languages and nya lists its sentences in another order, so each
    translation must be found by content among the other sentences. shift > 0 gives each nya
    sentence the id of another pair: the right answer is then never the one under the same id.
    """
    import random

    from conftest import ENGLISH

    from langadapt.evaluate.tasks.data import Example, TaskData

    words = [w for w in ENGLISH if w not in ("the", "a")]
    random.Random(0).shuffle(words)
    eng = ["so " + " ".join(words[i : i + 3]) for i in range(0, len(words) - 2, 3)]
    nya = ["so " + " ".join(reversed(words[i : i + 3])) for i in range(0, len(words) - 2, 3)]
    n = len(eng)
    examples = [Example(str(i), "eng", "test", text=t) for i, t in enumerate(eng)]
    examples += [Example(str((i + shift) % n), "nya", "test", text=nya[i]) for i in reversed(range(n))]
    return TaskData(examples, "planted")


PERSONS = ["king", "woman", "man"]
PLACES = [("great", "river"), ("old", "city")]  # two-word names: B-LOC I-LOC
OTHER = {"eng": ["went", "to", "saw", "said", "with", "from", "over"], "nya": ["ndi", "ku", "mwa", "zi", "tha", "pa"]}


def planted_tags(folder: Path) -> Path:
    """CoNLL files where a word's tag follows from the word alone: a correct probe scores entity F1 = 1."""
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("eng", "nya"):
        for split, n in (("train", 16), ("test", 6)):
            sentences = []
            for _ in range(n):
                words = [("so", "O")]
                for _ in range(rng.randint(4, 7)):
                    r = rng.random()
                    if r < 0.25:
                        words.append((rng.choice(PERSONS), "B-PER"))
                    elif r < 0.45:
                        first, second = rng.choice(PLACES)
                        words += [(first, "B-LOC"), (second, "I-LOC")]
                    else:
                        words.append((rng.choice(OTHER[lang]), "O"))
                sentences.append("".join(f"{w}\t{t}\n" for w, t in words))
            (folder / f"{lang}.{split}.conll").write_text("\n".join(sentences))
    return folder


# -- metrics against hand-computed values ------------------------------------------------


def test_precision_at_1_and_mexa_by_hand():
    sim = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.8], [0.1, 0.4, 0.7]])
    # rows: 0 -> 0 right, 1 -> 2 wrong, 2 -> 2 right
    assert R.precision_at_1(sim) == pytest.approx(2 / 3)
    # columns (other direction): col 0 -> row 0 right, col 1 -> row 2 wrong, col 2 -> row 1 wrong
    assert R.precision_at_1(sim.T) == pytest.approx(1 / 3)
    # MEXA: pair 0 beats its row and column; pair 1: 0.2 < 0.8; pair 2: 0.7 < 0.8 in its column
    assert R.mexa(sim) == pytest.approx(1 / 3)


def test_seqeval_entity_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O"]]
    # 3 gold entities, 2 predicted, both right: P = 1, R = 2/3, F1 = 0.8
    assert T.score(gold, pred, iob=True) == pytest.approx(0.8)
    assert T.score([["N", "V"]], [["N", "N"]], iob=False) == pytest.approx(0.5)


def test_mean_pooling_is_the_mean_of_real_token_states(tiny):
    model, tok = tiny
    enc = Encoder(model, tok)
    text = "the king said good day"
    got = enc.sentences([text, "a river"], "mean")[0]
    ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]  # the document separator
    with torch.no_grad():
        hs = model.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    want = torch.stack([h[0, 1:].mean(0) for h in hs]).numpy()  # separator left out
    assert got.shape == (model.config.num_hidden_layers + 1, model.config.hidden_size)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    last = enc.sentences([text], "last")[0]
    np.testing.assert_allclose(last, torch.stack([h[0, -1] for h in hs]).numpy(), rtol=1e-4, atol=1e-5)
    assert layer_index(model, "middle") == 1 and layer_index(model, "last") == 2 and layer_index(model, "-1") == 2


# -- every task kind on a tiny data set ---------------------------------------------------


def test_retrieval_and_alignment_find_translations_by_content(tiny):
    for kind in ("retrieval", "alignment"):
        for layer in ("middle", "last"):
            rows = TASKS.get(kind).run(ctx_for(tiny), TaskConfig(kind=kind, layer=layer), bitext())
            assert rows and all(r.mean == 1.0 and r.n_test == 9 for r in rows), rows
            # the same texts under the wrong ids: the sentence under a pair's id is never its translation
            rows = TASKS.get(kind).run(ctx_for(tiny), TaskConfig(kind=kind, layer=layer), bitext(shift=1))
            assert rows and all(r.mean == 0.0 for r in rows), rows
    rows = TASKS.get("alignment").run(ctx_for(tiny), TaskConfig(kind="alignment"), bitext())
    assert rows[0].extra["by_layer"] == [1.0, 1.0] and rows[0].extra["best_layer"] == 1
    rows = TASKS.get("retrieval").run(ctx_for(tiny), TaskConfig(kind="retrieval"), bitext())
    assert [r.setting for r in rows] == ["nya→eng", "eng→nya"] and [r.language for r in rows] == ["nya", "eng"]


def test_classify_probe_separates_topics_in_and_across_languages(tiny, tmp_path):
    cfg = TaskConfig(kind="classify", name="topic", data=str(topic_files(tmp_path / "topic")), seeds=3)
    data = load_data(cfg, ["nya", "eng"])
    rows = TASKS.get("classify").run(ctx_for(tiny), cfg, data)
    by = {(r.language, r.setting): r for r in rows}
    assert set(by) == {("nya", "in-language"), ("nya", "from eng"), ("eng", "in-language")}
    for r in rows:
        assert (
            len(r.seeds) == 3 and r.mean == pytest.approx(np.mean(r.seeds)) and r.std == pytest.approx(np.std(r.seeds))
        )
        assert r.n_test == 12 and r.extra["chance"] == 0.5
    assert by[("eng", "in-language")].mean >= 0.9  # disjoint vocabularies: linearly separable


def test_classify_finetune_runs_and_caps_are_counted(tiny, tmp_path):
    cfg = TaskConfig(
        kind="classify",
        data=str(topic_files(tmp_path / "t")),
        protocol="finetune",
        seeds=2,
        epochs=1,
        lr=1e-3,
        transfer="in-language",
        max_train_per_label=4,
        max_test_per_label=3,
        languages=("eng",),
    )
    rows = TASKS.get("classify").run(ctx_for(tiny, ("eng",)), cfg, load_data(cfg, ["eng"]))
    assert len(rows) == 1 and rows[0].n_train == 8 and rows[0].n_test == 6 and len(rows[0].seeds) == 2


def test_tag_probe_on_the_ner_fixture(tiny):
    cfg = TaskConfig(kind="tag", data="builtin:ner-fixture", seeds=3)
    data = builtin_data("ner-fixture")
    assert set(data.languages()) == {"eng", "nya"} and data.select("nya", "test")
    rows = TASKS.get("tag").run(ctx_for(tiny), cfg, data)
    assert {(r.language, r.setting) for r in rows} == {
        ("nya", "in-language"),
        ("nya", "from eng"),
        ("eng", "in-language"),
    }
    for r in rows:
        assert r.metric == "entity F1" and r.extra["labels"] == 7  # B- and I- of PER, LOC, ORG, and O
        assert (r.n_train, r.n_test) == (12, 4)  # sentences of the fixture, in each language
        assert len(r.seeds) == 3 and r.mean == pytest.approx(np.mean(r.seeds))
        assert r.std == pytest.approx(np.std(r.seeds))


def test_tag_finds_entities_whose_words_decide_them(tiny, tmp_path):
    """Probe and fine-tuning on words whose tags follow from the words: entity F1 = 1 in each language.

    A word matched to the wrong pieces, or tags handed back to the wrong words, scores below 1.
    """
    folder = planted_tags(tmp_path / "planted")
    cfg = TaskConfig(kind="tag", data=str(folder), seeds=2, transfer="in-language")
    rows = TASKS.get("tag").run(ctx_for(tiny), cfg, load_data(cfg, ["nya", "eng"]))
    assert [(r.language, r.seeds) for r in rows] == [("nya", [1.0, 1.0]), ("eng", [1.0, 1.0])]
    ft = TaskConfig(
        kind="tag",
        data=str(folder),
        protocol="finetune",
        seeds=1,
        epochs=8,
        lr=1e-2,
        batch_size=4,
        transfer="in-language",
    )
    rows = TASKS.get("tag").run(ctx_for(tiny, ("eng",)), ft, load_data(ft, ["eng"]))
    assert [(r.language, r.metric, r.mean) for r in rows] == [("eng", "entity F1", 1.0)]
    assert rows[0].extra["finetune"] == "full"


def test_finetune_trains_lora_on_a_model_above_the_threshold():
    """The choice from the parameter count: a module holding 2 * 10^9 parameters on the meta device (no memory)."""
    from langadapt.evaluate.tasks.classify import finetune_protocol

    big = torch.nn.Module()
    big.weight = torch.nn.Parameter(torch.empty(2_000_000_000, device="meta"))
    cfg = TaskConfig(kind="classify", protocol="finetune")
    assert cfg.full_finetune_max_parameters == 1_000_000_000
    assert finetune_protocol(big, cfg) == "lora r=16"
    small = TaskConfig(kind="classify", protocol="finetune", full_finetune_max_parameters=2_000_000_000)
    assert finetune_protocol(big, small) == "full"


def test_lora_finetune_learns_and_leaves_the_model_as_it_was(tiny, tmp_path):
    """With the threshold at 0 the tiny model trains LoRA in place of a copy: the planted tags are learnt
    (entity F1 = 1), the result says LoRA ran, and the model's weights, modules and flags are as before."""
    model = tiny[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    modules = [type(m).__name__ for m in model.modules()]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    folder = planted_tags(tmp_path / "planted")
    ft = TaskConfig(
        kind="tag",
        data=str(folder),
        protocol="finetune",
        seeds=1,
        epochs=40,
        lr=3e-4,
        batch_size=4,
        transfer="in-language",
        full_finetune_max_parameters=0,
    )
    rows = TASKS.get("tag").run(ctx_for(tiny, ("eng",)), ft, load_data(ft, ["eng"]))
    assert [(r.language, r.mean, r.extra["finetune"]) for r in rows] == [("eng", 1.0, "lora r=16")]
    assert [type(m).__name__ for m in model.modules()] == modules and not model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_every_task_kind_has_help_and_a_documented_data_fit():
    for entry in TASKS.entries():
        assert entry.help and (entry.obj.builtin_data or entry.name == "lm-eval"), entry.name


# -- bad input: one clear error naming the file and line -------------------------------------


def test_unknown_test_label_names_file_and_line(tiny, tmp_path):
    folder = topic_files(tmp_path / "bad")
    test = folder / "eng.test.jsonl"
    lines = test.read_text().splitlines()
    lines[3] = json.dumps({"text": "king river", "label": "weather"})
    test.write_text("\n".join(lines) + "\n")
    cfg = TaskConfig(kind="classify", name="topic", data=str(folder), seeds=1)
    with pytest.raises(InputError, match=rf"{test}:4: label 'weather' of the test split"):
        TASKS.get("classify").run(ctx_for(tiny, ("eng",)), cfg, load_data(cfg, ["eng"]))


def test_malformed_conll_line_names_file_and_line(tmp_path):
    bad = tmp_path / "eng.train.conll"
    bad.write_text("John\tB-PER\nlives\tO\n\nMary\n")
    with pytest.raises(InputError, match=rf"{bad}:4: malformed CoNLL line 'Mary'"):
        load_data(TaskConfig(kind="tag", data=str(tmp_path)), ["eng"])


def test_hub_task_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = TaskConfig(kind="classify", data="hf:no-such-org/sib-200-like", subsets=("nya=nya_Latn",))
    with pytest.raises(InputError, match=r"hf:no-such-org/sib-200-like \(nya_Latn\) cannot be loaded") as e:
        load_data(cfg, ["nya"])
    assert "offline?" in e.value.hint


def test_task_recipe_problems_are_reported_at_validation(tiny_recipe):
    from langadapt.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        tiny_recipe(
            eval={
                "tasks": [
                    {"kind": "clasify", "data": "builtin:bible-topic"},
                    {"kind": "retrieval", "data": "builtin:bible-topic"},
                    {"kind": "tag", "data": "/nonexistent/*.conll", "pooling": "max"},
                ]
            }
        )
    text = str(e.value)
    assert "unknown tasks 'clasify' (did you mean 'classify'?)" in text
    assert "builtin:bible-topic does not fit kind retrieval" in text
    assert "no file matches '/nonexistent/*.conll'" in text and "pooling: 'max'" in text


def test_harness_bridge_runs_a_local_task_offline(tiny, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = [
        {"question": "The king sat on his", "choices": ["throne", "river"], "answer": 0},
        {"question": "The fish swam in the", "choices": ["palace", "water"], "answer": 1},
        {"question": "Rain fell on the", "choices": ["lake", "crown"], "answer": 0},
    ]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_mc.yaml").write_text(
        "task: local_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    cfg = TaskConfig(kind="lm-eval", harness_tasks=("local_mc",), harness_include=str(tmp_path / "tasks"))
    rows = TASKS.get("lm-eval").run(ctx_for(tiny, ("eng",)), cfg, load_data_none())
    assert [(r.setting, r.metric, r.n_test) for r in rows] == [("local_mc", "acc", 3)]

    # by hand: the choice with the higher log-likelihood of " choice" after the question wins
    model, tok = tiny
    right = 0
    for d in docs:
        lls = []
        for c in d["choices"]:
            ctx_ids = tok(d["question"], add_special_tokens=False)["input_ids"]
            ids = tok(d["question"] + " " + c, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
            lls.append(sum(logp[i - 1, ids[i]].item() for i in range(len(ctx_ids), len(ids))))
        right += int(np.argmax(lls) == d["answer"])
    assert rows[0].mean == pytest.approx(right / 3)


@pytest.mark.slow  # indexing every harness task takes about a minute
def test_harness_unknown_task_is_named(tiny):
    pytest.importorskip("lm_eval")
    cfg = TaskConfig(kind="lm-eval", harness_tasks=("no_such_task_anywhere",))
    with pytest.raises(InputError, match="lm-evaluation-harness has no task no_such_task_anywhere"):
        TASKS.get("lm-eval").run(ctx_for(tiny, ("eng",)), cfg, load_data_none())


def load_data_none():
    from langadapt.evaluate.tasks.data import TaskData

    return TaskData([], "harness")


@pytest.mark.parametrize("kind", ["sentencepiece", "wordpiece"])
def test_tasks_run_on_encoders(kind, tmp_path):
    """Encoders: their own special tokens are left out of pooling; words map to pieces by offsets."""
    from conftest import build_tiny_encoder
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = build_tiny_encoder(tmp_path / kind, kind=kind)
    model, tok = AutoModelForMaskedLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    ctx = TaskContext("base", model, tok, Encoder(model, tok), ["nya", "eng"], "eng")
    rows = TASKS.get("retrieval").run(ctx, TaskConfig(kind="retrieval"), bitext())
    assert [r.mean for r in rows] == [1.0, 1.0]
    rows = TASKS.get("retrieval").run(ctx, TaskConfig(kind="retrieval"), bitext(shift=1))
    assert [r.mean for r in rows] == [0.0, 0.0]
    cfg = TaskConfig(kind="tag", data=str(planted_tags(tmp_path / "tags")), seeds=1, transfer="in-language")
    rows = TASKS.get("tag").run(ctx, cfg, load_data(cfg, ["nya", "eng"]))
    assert [(r.language, r.mean) for r in rows] == [("nya", 1.0), ("eng", 1.0)]
    enc = ctx.encoder.token_ids("king river")
    assert enc[1][0] is False and enc[1][-1] is False  # [CLS]/<s> and [SEP]/</s> are not pooled
