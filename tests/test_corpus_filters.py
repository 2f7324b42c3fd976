"""Corpus parts without running the stage: steps registry, statistics per script, thresholds, PII, LID, templates."""

from __future__ import annotations

import numpy as np
import pytest

from langadapt.config import SourceConfig
from langadapt.corpus import kg2text, lid, pii, thresholds
from langadapt.corpus.config import Thresholds, threshold_fields
from langadapt.corpus.filters import ENGLISH, FILTERS, STATS, _punctuation, measure, quality_reason, step_of
from langadapt.corpus.filters import terminal_punctuation as terminal
from langadapt.script import dominant_script, words

KINDS = {"read", "lid", "quality", "dedup", "format", "url"}


def stats_of(text: str, stop: frozenset[str] = frozenset()) -> dict[str, float]:
    return measure(text, stop, _punctuation(), terminal())


@pytest.mark.parametrize("name", FILTERS.names())
def test_every_step_conforms(name):
    entry = next(e for e in FILTERS.entries() if e.name == name)
    assert entry.obj.kind in KINDS and len(entry.help) > 15
    for field in entry.obj.thresholds:  # quality steps name recipe fields with an English value
        assert field in ENGLISH and field in threshold_fields() and step_of(field) == name
    assert (entry.obj.kind == "quality") == bool(entry.obj.thresholds)


def test_every_threshold_belongs_to_one_step_and_is_applied():
    assert set(threshold_fields()) == set(ENGLISH)
    for field, (stat, english) in ENGLISH.items():
        assert stat in STATS
        passing = english * 1.5 + 1 if field.startswith("min_") else english / 2
        failing = english / 2 - 0.001 if field.startswith("min_") else english * 1.5 + 1
        assert quality_reason({stat: passing}, {field: english}) is None
        assert quality_reason({stat: failing}, {field: english}) == (step_of(field), field)


def test_statistics_on_clean_and_junk_english():
    clean = stats_of(
        "The river runs past the old mill and into the valley. People of the town walk there in the evening.\n"
        "It is a quiet place, and the water is cold in every season of the year.",
        frozenset({"the", "and", "of", "in"}),
    )
    assert clean["words"] == 36 and 3 < clean["mean_word_length"] < 6 and clean["stop_words"] == 4
    assert clean["terminal_punct_lines"] == 1.0 and clean["dup_lines"] == 0 and clean["bad_chars"] == 0
    junk = stats_of("\n".join(["- Home", "- Login", "- Home", "- Cart", "12 | 34 | 56 | 78", "..."] * 3))
    assert junk["bullet_lines"] > 0.6 and junk["dup_lines"] > 0.5 and junk["non_alpha_lines"] > 0.2
    assert junk["terminal_punct_lines"] < 0.3
    spam = stats_of("buy cheap pills now " * 50)
    assert spam["top_2gram"] > 0.2 and spam["dup_5gram"] > 0.9 and spam["dup_10gram"] > 0.9
    broken = stats_of("caf\ufffd \ufffd\ufffd\ufffd text \x00")
    assert broken["bad_chars"] > 0.1


def test_top_ngrams_match_datatrove_ties_included():
    """The vectorised top 2/3/4-gram fractions equal datatrove's Gopher filter on word lists full of ties
    (Counter.most_common: the first n-gram to occur wins), whatever the process's string-hash seed."""
    import random
    from collections import Counter

    from datatrove.pipeline.filters.gopher_repetition_filter import get_n_grams

    from langadapt.corpus.filters import _ngram_repetition

    rng = random.Random(0)
    vocab = ["a", "bb", "ccc", "dddd", "eeeee", "ff", "g"]  # few words of different lengths: many tied n-grams
    for _ in range(300):
        ws = [rng.choice(vocab) for _ in range(rng.randint(4, 30))]
        got, chars = _ngram_repetition(ws), sum(map(len, ws))
        for n in (2, 3, 4):
            if len(ws) < n + 1:
                continue
            gram, count = Counter(get_n_grams(ws, n)).most_common(1)[0]
            assert got[f"top_{n}gram"] == pytest.approx(len(gram) * count / chars if count > 1 else 0.0), (ws, n)


def test_stop_words_from_text_break_ties_by_the_word():
    from langadapt.corpus.filters import stop_words_from

    texts = ["zeta beta alpha gamma", "gamma alpha zeta beta", "delta"]
    assert stop_words_from(texts, n=3) == ["alpha", "beta", "gamma"]


def test_non_latin_script_amharic():
    text = (
        "የሰው ልጆች ሁሉ ሲወለዱ ነጻና በክብርና በመብትም እኩልነት ያላቸው ናቸው። የተፈጥሮ ማስተዋልና ሕሊና ስላላቸው አንዱ ሌላውን በወንድማማችነት መንፈስ መመልከት ይገባቸዋል።"
    )
    assert dominant_script(text) == ("Ethi", 1.0)
    s = stats_of(text)
    assert s["words"] == 20 and s["alpha_words"] == 1.0
    assert s["terminal_punct_lines"] == 1.0  # the Ethiopic full stop counts as terminal punctuation


@pytest.mark.parametrize(
    ("text", "script", "n_words"),
    [
        ("มนุษย์ทั้งหลายเกิดมามีอิสระ", "Thai", 27),  # Thai: no spaces between words
        ("人人生而自由,在尊严和权利上一律平等。", "Hani", 17),
        ("すべての人間は、生まれながらにして自由である。", "Jpan", 21),
        ("មនុស្សទាំងអស់", "Khmr", 13),
    ],
)
def test_scripts_written_without_spaces_are_segmented_by_character(text, script, n_words):
    assert dominant_script(text)[0] == script
    assert stats_of(text)["words"] == n_words
    assert len(words(text)) >= n_words


def test_mixed_text_keeps_latin_words_whole():
    assert words("Bangkok กรุงเทพ city") == ["Bangkok", "ก", "ร", "ุ", "ง", "เ", "ท", "พ", "city"]


def test_derived_thresholds_follow_the_language():
    rng = np.random.default_rng(0)
    n = 400
    stats = {s: rng.uniform(0.0, 0.05, n) for s in STATS}
    ref = thresholds.reference()["stats"]
    stats["mean_word_length"] = rng.normal(2 * ref["mean_word_length"]["median"], 0.3, n)  # agglutinative
    stats["words"] = rng.normal(ref["words"]["median"] / 2, 10, n)
    stats["dup_5gram"] = np.full(n, ref["dup_5gram"]["median"] / 4)  # less repetition than English
    stats["terminal_punct_lines"] = rng.uniform(0.5, 1.0, n)
    none = {f: None for f in threshold_fields()}
    d = thresholds.derive(stats, "median_ratio", 50, none)
    assert d["min_mean_word_length"]["value"] == pytest.approx(6.0, rel=0.05)  # English 3, scaled by ~2
    assert d["max_mean_word_length"]["value"] == pytest.approx(20.0, rel=0.05)
    assert d["min_words"]["value"] == pytest.approx(25.0, rel=0.05)
    assert d["max_dup_5gram"]["value"] == 0.15  # repetition: never stricter than English
    assert d["max_bad_chars"]["value"] == 0.01 and d["max_bad_chars"]["how"] == "english value"
    for entry in d.values():
        assert {"value", "statistic", "english", "how", "reference", "language_median"} <= set(entry)
    q = thresholds.derive(stats, "quantile", 50, none)
    cut = ref["terminal_punct_lines"]["cut:min_terminal_punct_lines"]
    assert np.mean(stats["terminal_punct_lines"] < q["min_terminal_punct_lines"]["value"]) == pytest.approx(
        cut, abs=0.01
    )
    assert thresholds.derive(stats, "english", 50, none)["min_words"]["value"] == 50
    few = thresholds.derive({s: v[:10] for s, v in stats.items()}, "median_ratio", 50, none)
    assert few["min_words"]["value"] == 50 and "too few" in few["min_words"]["how"]
    manual = thresholds.derive(stats, "median_ratio", 50, none | {"min_words": 7.0})
    assert manual["min_words"] == manual["min_words"] | {"value": 7.0, "how": "set in the recipe"}
    assert "min_words" not in thresholds.values(d, {"words"})


def test_reference_states_what_it_is_and_that_fineweb2_used_web_english():
    shipped = thresholds.reference()
    assert set(thresholds.provenance()) == {"description", "register", "documents", "limitation"}
    assert shipped["register"] == thresholds.REGISTER and shipped["limitation"] == thresholds.LIMITATION
    assert "FineWeb2" in shipped["limitation"] and "web English" in shipped["limitation"]
    assert set(shipped["stats"]) == set(STATS)
    rebuilt = thresholds.build_reference({s: np.arange(5.0) for s in STATS}, "five documents")
    assert rebuilt["limitation"] == thresholds.LIMITATION and rebuilt["documents"] == 5


def test_pii_is_replaced_and_counted():
    text, counts = pii.scrub(
        "Write to jane.banda@example.mw or call +265 999 123 456 / (01) 234-5678; server 10.0.0.12 or 2001:db8::8a2e:370:7334."
    )
    assert counts == {"email": 1, "phone": 2, "ip": 2}
    assert "jane" not in text and "999" not in text and "10.0.0.12" not in text and "2001:db8" not in text
    for ok in ("Genesis 1:1-3 in 2019 2020 2021", "version 3.2.1 at 12:30:45", "pa 1.5.2020 anthu 1000 2000 3000"):
        assert pii.scrub(ok) == (ok, {})


def test_lid_codes_support_and_model_file_checks(tmp_path):
    ident = lid.Cld2()
    assert ident.predict("Pachiyambi Mulungu adalenga zakumwamba ndi dziko lapansi.")[0] == "nya"
    assert ident.predict("In the beginning God created the heavens and the earth.") == (
        "eng",
        pytest.approx(0.99, abs=0.02),
    )
    assert ident.supports("swh") and ident.supports("nya") and not ident.supports("xxx")
    assert lid.model_file_problem(tmp_path / "none.bin").startswith("no such file")
    (tmp_path / "bad.bin").write_bytes(b"PK\x03\x04 not a model")
    assert "not a fastText model" in lid.model_file_problem(tmp_path / "bad.bin")
    from langadapt.corpus.config import CorpusConfig

    notes = lid.support_notes(CorpusConfig(target=SourceConfig(path="x", language="qxq")))
    assert len(notes) == 1 and "does not know 'qxq'" in notes[0] and "script" in notes[0]


def test_lid_confidence_threshold_set_or_derived_as_fineweb2():
    assert lid.confidence_threshold(0.7, [], 50) == {"value": 0.7, "how": "set in the recipe"}
    assert lid.confidence_threshold(None, [0.9] * 10, 50)["value"] == lid.FALLBACK_CONFIDENCE  # too few documents
    spread = [0.2, 0.4, 0.5, 0.6, 0.8] * 20  # an identifier unsure of the language: median 0.5 - std 0.2
    assert lid.confidence_threshold(None, spread, 50)["value"] == pytest.approx(0.3)
    assert lid.confidence_threshold(None, [0.99, 0.98, 1.0] * 20, 50)["value"] == 0.9  # at most 0.9
    mid = [0.6, 0.7, 0.8] * 20
    assert lid.confidence_threshold(None, mid, 50)["value"] == pytest.approx(0.7 - np.std(mid))


def test_knowledge_triples_become_sentences(tmp_path):
    from langadapt.corpus.config import KnowledgeConfig

    triples = tmp_path / "triples.tsv"
    triples.write_text(
        "relation\thead\ttail\tlanguage\n"
        "/r/IsA\t/c/ny/galu\tnyama\tnya\n"
        "AtLocation\tgalu\tnyumba\tnya\n"
        "IsA\tdog\tanimal\teng\n"
        "MadeOf\tgalu\tnyama\tnya\n"
        "broken\n",
        encoding="utf-8",
    )
    cfg = KnowledgeConfig(triples=str(triples))
    records = list(kg2text.knowledge_records(cfg, "nya"))
    docs = [r.doc for r in records if r.doc]
    assert [d.text for d in docs] == ["Galu ndi nyama. Galu amapezeka ku nyumba."] or [d.text for d in docs] == [
        "Galu ndi mtundu wa nyama. Galu amapezeka ku nyumba."
    ]
    skipped = sorted(r.skip for r in records if r.doc is None)
    assert skipped == ["knowledge:bad_row", "knowledge:no_template:MadeOf", "knowledge:other_language"]
    eng = [r.doc.text for r in kg2text.knowledge_records(cfg, "eng") if r.doc]
    assert eng in (["Dog is a kind of animal."], ["A dog is a animal."])
    assert kg2text.problems(cfg, "yor", "k") == ["k.templates: no templates for 'yor' (languages: eng, nya)"]


def test_thresholds_section_types():
    assert all(getattr(Thresholds(), f) is None for f in threshold_fields())
