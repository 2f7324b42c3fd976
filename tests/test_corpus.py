"""Corpus stage end to end: datatrove passes, full accounting, group split, thresholds.json, resume."""

from __future__ import annotations

import json

import pytest

from langadapt.corpus import flow as corpus
from langadapt.documents import read_docs
from langadapt.errors import ConfigError, InputError
from langadapt.recipe import CorpusConfig, Recipe, SourceConfig
from langadapt.rundir import RunDir, read_json


def test_normalize():
    assert corpus.normalize("  cafe\u0301\u200b  au\tlait \n\n x ", "NFC") == "café au lait\n\nx"
    assert corpus.normalize("ﬁ", "NFKC") == "fi" and corpus.normalize("ﬁ", "none") == "ﬁ"


def test_heldout_by_fraction_is_stable_and_never_empty():
    cfg = CorpusConfig(target=SourceConfig(path="x", language="nya"), heldout_fraction=0.3)
    groups = {f"g{i}" for i in range(200)}
    picks = corpus.heldout_groups(groups, cfg)
    assert 30 < len(picks) < 90 and picks == corpus.heldout_groups(groups, cfg)
    assert all(corpus.is_heldout(g, cfg) for g in picks)
    # about a hundred groups and a small fraction: the hash may pick none; one is held out anyway
    small = CorpusConfig(target=SourceConfig(path="x", language="nya"), heldout_fraction=0.001)
    hundred = {f"site{i}.org" for i in range(100)}
    assert len(corpus.heldout_groups(hundred, small)) == 1
    assert corpus.heldout_groups({"only"}, small) == set()


def test_stage_accounts_for_every_record(tiny_recipe, corpus_files):
    # add a duplicate, a too-short document, a broken line and an invalid UTF-8 byte to the target
    extra = corpus_files["target"].parent / "target-extra.jsonl"
    lines = corpus_files["target"].read_text().splitlines()
    bad = json.dumps({"text": lines[5][20:], "book": "G01"}).encode().replace(b"a", b"\xff", 1)
    body = "\n".join(lines + [lines[0], json.dumps({"text": "tiny", "book": "G01"}), "{broken"]).encode()
    extra.write_bytes(body + b"\n" + bad + b"\n")
    recipe = tiny_recipe(corpus={"target": {"path": str(extra), "language": "nya", "group_field": "book"}})
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    out = rd.path("corpus")
    stats = read_json(out / "stats.json")
    nya = stats["languages"]["nya"]
    assert nya["records_read"] == len(lines) + 4
    assert nya["dropped"]["exact-dedup:duplicate"] == 1 and nya["dropped"]["length:too_short"] == 1
    assert nya["dropped"]["read:unparseable"] == 1
    assert nya["repaired"] == {"invalid_utf8": 1}  # the line with the invalid byte, kept with U+FFFD
    assert nya["kept"] + sum(nya["dropped"].values()) == nya["records_read"]
    for source in stats["sources"].values():  # balances per source too
        assert source["records"] == source["kept"] + sum(sum(r.values()) for r in source["dropped"].values())
    assert nya["heldout"]["groups"] == ["G03", "G07"]
    train_groups = {d.group for d in read_docs(out / "nya" / "train.parquet")}
    assert not train_groups & {"G03", "G07"}
    dropped = read_docs(out / "dropped" / "nya.parquet")
    assert len(dropped) == sum(nya["dropped"].values())
    steps = nya["steps"]
    assert steps[0]["documents_in"] == nya["records_read"] and steps[-1]["documents_out"] == nya["kept"]
    thresholds = read_json(out / "thresholds.json")["languages"]["nya"]
    assert thresholds["language_id"]["supported"] and thresholds["script"] == "Latn"
    entry = thresholds["thresholds"]["min_mean_word_length"]
    assert {"value", "statistic", "english", "how", "reference"} <= set(entry)
    # what the thresholds were derived against, and that it is not the web English FineWeb2 used
    reference = read_json(out / "thresholds.json")["reference"]
    assert "Bible" in reference["description"] and "not web text" in reference["register"]
    assert "web English" in reference["limitation"] and reference["documents"] > 1000
    assert not (out / "work").exists()  # intermediate files are removed once the stage is done


def test_thresholds_can_be_set_and_steps_switched_off(tiny_recipe):
    recipe = tiny_recipe(
        corpus={
            "disable": ["lid", "near-dedup", "pii", "line-dedup"],
            "quality": {"thresholds": {"min_words": 1000}},
            "heldout_groups": ["G03"],
        }
    )
    with pytest.raises(InputError, match="no nya documents left") as e:
        corpus.run(recipe, RunDir(recipe.resolved_run_dir))
    assert "words:min_words" in str(e.value)


def test_empty_corpus_is_one_clear_error(tiny_recipe, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \nab\n")
    recipe = tiny_recipe(corpus={"target": {"path": str(empty), "language": "nya"}})
    with pytest.raises(InputError, match="no nya documents left") as e:
        corpus.run(recipe, RunDir(recipe.resolved_run_dir))
    assert "too_short" in str(e.value) and "blank" in str(e.value)
    assert not RunDir(recipe.resolved_run_dir).path("corpus").exists()


def test_no_heldout_group_is_an_error(tiny_recipe):
    recipe = tiny_recipe(corpus={"heldout_groups": ["NOPE"]})
    with pytest.raises(InputError, match="no nya documents are held out"):
        corpus.run(recipe, RunDir(recipe.resolved_run_dir))


def test_bad_recipes_fail_at_validation(corpus_files, tiny_model, tmp_path):
    from conftest import tiny_recipe_dict

    not_fasttext = tmp_path / "lid.bin"
    not_fasttext.write_bytes(b"\x00" * 64)
    cases = {
        "lid.model_file: no such file": {"lid": {"model_file": str(tmp_path / "missing.bin")}},
        "is not a fastText model": {"lid": {"model_file": str(not_fasttext)}},
        "unknown filters 'gopher'": {"disable": ["gopher"]},
        "min_words: expected float": {"quality": {"thresholds": {"min_words": "fifty"}}},
        "executor: slurm needs Slurm": {"executor": "slurm"},
        "not an ISO 15924 script": {"lid": {"script": "Latin"}},
    }
    for message, section in cases.items():
        data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / "run", corpus=section)
        with pytest.raises(ConfigError, match=message):
            Recipe.from_dict(data)
    assert not (tmp_path / "run").exists()  # no work before a valid recipe


def test_changed_decisions_reuse_the_measurement(tiny_recipe, monkeypatch):
    from langadapt.corpus import blocks

    def recipe(**corpus_section):  # target only: a hand-set threshold applies to every language
        return tiny_recipe(corpus={"replay": None, **corpus_section}, train={"replay_ratio": 0})

    rd = RunDir(recipe().resolved_run_dir)
    corpus.run(recipe(), rd)
    out = rd.path("corpus")
    first = read_json(out / "stats.json")
    assert first["measured"] == "computed" and (out / "measured" / "measure.json").is_file()
    calls = []
    monkeypatch.setattr(blocks.Measure, "run", _spy(blocks.Measure.run, calls))
    # a hand-set threshold, a derived LID confidence and dedup settings decide anew on the same measurement
    decisions = {
        "quality": {"thresholds": {"min_words": 34}},
        "lid": {"min_confidence": None},
        "near_dedup": {"bands": 10},
    }
    corpus.run(recipe(**decisions), rd)
    second = read_json(out / "stats.json")
    assert calls == [] and second["measured"] == "reused"
    assert second["languages"]["nya"]["dropped"].get("words:min_words", 0) > 0
    assert second["languages"]["nya"]["kept"] < first["languages"]["nya"]["kept"]
    report = read_json(out / "thresholds.json")["languages"]["nya"]
    assert report["thresholds"]["min_words"]["value"] == 34
    assert report["language_id"]["min_confidence_how"].startswith("FineWeb2")  # derived, on the same measurement
    # back to the first recipe: the same output as measured from scratch
    corpus.run(recipe(), rd)
    assert calls == [] and read_json(out / "stats.json")["languages"] == first["languages"]
    # what changes the measurement (normalisation here), or --force, measures again
    corpus.run(recipe(normalization="NFKC"), rd)
    assert calls and read_json(out / "stats.json")["measured"] == "computed"
    calls.clear()
    corpus.run(recipe(normalization="NFKC"), rd, force=True)
    assert calls


def test_fasttext_lid_model_file_with_glotlid_labels(tiny_recipe, corpus_files, tmp_path):
    """The GlotLID / OpenLID path: a fastText model file with `__label__<lang>_<Script>` labels."""
    fasttext = pytest.importorskip("fasttext")
    from conftest import english_lines, target_docs

    train = tmp_path / "lid-train.txt"
    nya = [d["text"] for d in target_docs(seed=11)]
    train.write_text(
        "".join(f"__label__nya_Latn {t}\n" for t in nya)
        + "".join(f"__label__eng_Latn {t}\n" for t in english_lines(200, seed=12)),
        encoding="utf-8",
    )
    model = tmp_path / "glotlid-tiny.bin"
    fasttext.train_supervised(input=str(train), epoch=20, dim=16, minn=2, maxn=4, verbose=0).save_model(str(model))

    mixed = tmp_path / "mixed.jsonl"
    planted = [" ".join(english_lines(4, seed=50 + i)) for i in range(6)]
    rows = [json.loads(line) for line in corpus_files["target"].read_text().splitlines()]
    rows += [{"text": t, "book": "G01"} for t in planted]
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tiny_recipe(
        corpus={
            "target": {"path": str(mixed), "language": "nya", "group_field": "book"},
            "lid": {"model_file": str(model)},
        }
    )
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    out = rd.path("corpus")
    languages = read_json(out / "stats.json")["languages"]
    lid_drops = {lang: {r: n for r, n in s["dropped"].items() if r.startswith("lid:")} for lang, s in languages.items()}
    # exactly the planted English documents leave the target; the English replay is English to the model too
    assert lid_drops == {"nya": {"lid:language:eng": len(planted)}, "eng": {}}
    assert languages["nya"]["language_id"]["nya"] >= len(rows) - len(planted)
    lid_report = read_json(out / "thresholds.json")["languages"]["nya"]["language_id"]
    assert lid_report["identifier"] == "fasttext" and lid_report["supported"]


def _planted(tmp_path, n=40, near=10, exact=5, footer_docs=15):
    """English-like documents with planted near duplicates (one word changed), exact duplicates and a footer."""
    import random

    from conftest import english_lines

    rng = random.Random(3)
    base = [" ".join(english_lines(5, seed=100 + i)) for i in range(n)]
    docs = [{"id": f"d{i}", "text": t, "book": f"g{i % 10}"} for i, t in enumerate(base)]
    for i in range(footer_docs):
        docs[i]["text"] += "\nCopyright 2024 Example News Group. All rights reserved."
    for j in range(near):
        words = base[j].split()
        k = rng.randrange(10, len(words) - 10)
        words[k] = "zebra"
        docs.append({"id": f"near{j}", "text": " ".join(words), "book": f"g{j % 10}"})
    docs += [{"id": f"exact{j}", "text": base[20 + j], "book": "g5"} for j in range(exact)]
    path = tmp_path / "planted.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_dedup_on_planted_pairs(tiny_recipe, tmp_path):
    path = _planted(tmp_path)
    recipe = tiny_recipe(
        corpus={
            "target": {"path": str(path), "language": "eng", "group_field": "book"},
            "replay": None,
            "heldout_groups": ["g0"],
            "line_dedup": {"min_documents": 10},
            "near_dedup": {"rehydrate": True, "rehydrate_cap": 5},
        },
        train={"replay_ratio": 0},
    )
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    out = rd.path("corpus")
    eng = read_json(out / "stats.json")["languages"]["eng"]
    # rehydration: a kept training document whose cluster had 2 members is there twice (d0 is held out)
    copies = {d.id for d in read_docs(out / "eng" / "train.parquet") if "#" in d.id}
    assert len(copies) >= 8 and copies <= {f"d{j}#1" for j in range(1, 10)}
    dropped = {d.id: r for d, r in zip(read_docs(out / "dropped" / "eng.parquet"), _reasons(out))}
    assert {i for i, r in dropped.items() if r == "duplicate"} == {f"exact{j}" for j in range(5)}
    found = {i for i, r in dropped.items() if r == "near_duplicate"}
    planted = {f"near{j}" for j in range(10)}
    assert len(found & planted) >= 9 and found <= planted  # recall >= 0.9, precision 1
    assert eng["boilerplate"]["lines_removed"] == 15
    kept = read_docs(out / "eng" / "train.parquet") + read_docs(out / "eng" / "heldout.parquet")
    assert not any("Copyright" in d.text for d in kept)
    assert sum(eng["near_duplicate_clusters"].values()) == len(found)

    from langadapt.report.corpus_section import render

    page = render(rd)
    parts = (
        "near-dedup",
        "near_duplicate",
        "min_mean_word_length",
        "data:image/png;base64",
        "Drop reasons",
        "confidence",
    )
    for part in parts:
        assert part in page


def _reasons(out):
    import pyarrow.parquet as pq

    return pq.read_table(out / "dropped" / "eng.parquet", columns=["reason"]).column("reason").to_pylist()


@pytest.mark.parametrize("huge_mb", [1, pytest.param(50, marks=pytest.mark.slow)])
def test_accounting_under_bad_input(tiny_recipe, corpus_files, tmp_path, huge_mb):
    folder = tmp_path / "bad"
    folder.mkdir()
    good = corpus_files["target"].read_text().splitlines()
    (folder / "a.jsonl").write_text("\n".join(good) + "\n")
    (folder / "b-invalid.jsonl").write_bytes(good[1].encode().replace(b"a", b"\xc3\x28", 2) + b"\n")
    (folder / "c-nul.txt").write_bytes(b"Ndipo\x00 anati\x00 kwa iwo zonse zinali bwino kwambiri tsiku limenelo\n")
    (folder / "d-binary.txt").write_bytes(bytes(b for b in range(256) if b not in b"\n\r") * 40 + b"\n")
    (folder / "e-empty.txt").write_bytes(b"")
    (folder / "f-huge.txt").write_bytes(b"mawu " * ((huge_mb << 20) // 5) + b"\n")  # one line of huge_mb MB
    recipe = tiny_recipe(
        corpus={"target": {"path": str(folder), "language": "nya", "group_field": ""}, "heldout_groups": ["a.jsonl#0"]}
    )
    rd = RunDir(recipe.resolved_run_dir)
    corpus.run(recipe, rd)
    stats = read_json(rd.path("corpus") / "stats.json")
    nya = stats["languages"]["nya"]
    assert nya["records_read"] == len(good) + 4  # the empty file has no record
    assert nya["kept"] + sum(nya["dropped"].values()) == nya["records_read"]
    assert nya["dropped"]["length:too_long"] == 1 and nya["repaired"] == {
        "invalid_utf8": 2
    }  # a line and the binary file
    binary_reason = [r for r in nya["dropped"] if r.startswith(("bad-chars", "lid", "script"))]
    assert binary_reason
    assert len(read_docs(rd.path("corpus") / "dropped" / "nya.parquet")) == sum(nya["dropped"].values())


def test_interrupted_multi_task_run_resumes_only_unfinished_tasks(tiny_recipe, corpus_files, tmp_path, monkeypatch):
    from langadapt.corpus import blocks

    folder = tmp_path / "shards"
    folder.mkdir()
    lines = corpus_files["target"].read_text().splitlines()
    for i in range(4):
        (folder / f"part{i}.jsonl").write_text("\n".join(lines[i::4]) + "\n")
    sections = {"target": {"path": str(folder), "language": "nya", "group_field": "book"}, "replay": None}
    reference = tiny_recipe(run_dir=str(tmp_path / "whole"), corpus=sections, train={"replay_ratio": 0})
    corpus.run(reference, RunDir(reference.resolved_run_dir))

    original = blocks.Measure.run

    def crash_on_task_2(self, data, rank=0, world_size=1):
        if rank == 2:
            raise KeyboardInterrupt("killed half-way")
        yield from original(self, data, rank, world_size)

    monkeypatch.setattr(blocks.Measure, "run", crash_on_task_2)
    recipe = tiny_recipe(run_dir=str(tmp_path / "interrupted"), corpus=sections, train={"replay_ratio": 0})
    rd = RunDir(recipe.resolved_run_dir)
    with pytest.raises(KeyboardInterrupt):
        corpus.run(recipe, rd)
    logs = rd.partial("corpus") / "work" / "logs" / "measure"
    done = sorted(p.name for p in (logs / "completions").iterdir())
    assert done == ["00000", "00001"]
    monkeypatch.setattr(blocks.Measure, "run", original)
    calls = []
    monkeypatch.setattr(blocks.SourceReader, "run", _spy(blocks.SourceReader.run, calls))
    corpus.run(recipe, rd)
    assert sorted(calls) == [2, 3]  # finished tasks were not redone
    assert not rd.partial("corpus").exists()
    for split in ("train", "heldout"):
        a = read_docs(rd.path("corpus") / "nya" / f"{split}.parquet")
        b = read_docs(RunDir(reference.resolved_run_dir).path("corpus") / "nya" / f"{split}.parquet")
        assert a == b
    assert (
        read_json(rd.path("corpus") / "stats.json")["languages"]
        == read_json(RunDir(reference.resolved_run_dir).path("corpus") / "stats.json")["languages"]
    )


def _spy(run, calls):
    def wrapped(self, data=None, rank=0, world_size=1):
        calls.append(rank)
        yield from run(self, data, rank, world_size)

    return wrapped


@pytest.mark.slow
def test_ray_executor_keeps_the_same_documents_as_local(tiny_recipe, tmp_path):
    pytest.importorskip("ray")
    path = _planted(tmp_path)
    sections = {
        "target": {"path": str(path), "language": "eng", "group_field": "book"},
        "replay": None,
        "heldout_groups": ["g0"],
        "tasks": 3,
    }
    runs = {}
    for executor in ("local", "ray"):
        recipe = tiny_recipe(
            run_dir=str(tmp_path / executor), corpus=sections | {"executor": executor}, train={"replay_ratio": 0}
        )
        rd = RunDir(recipe.resolved_run_dir)
        corpus.run(recipe, rd)
        runs[executor] = [read_docs(rd.path("corpus") / "eng" / f"{s}.parquet") for s in ("train", "heldout")]
    assert runs["ray"] == runs["local"] and runs["local"][0]


@pytest.mark.slow
def test_killed_process_resumes_only_unfinished_tasks(corpus_files, tiny_model, tmp_path):
    """A real SIGKILL of `langadapt corpus` half-way through the measuring pass, then a plain re-run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import target_docs, tiny_recipe_dict, write_recipe

    folder = tmp_path / "shards"
    folder.mkdir()
    docs = target_docs(n_groups=60, per_group=100, seed=5)
    for i in range(6):
        (folder / f"part{i}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[i::6]))
    sections = {
        "target": {"path": str(folder), "language": "nya", "group_field": "book"},
        "replay": None,
        "heldout_groups": ["G03"],
        "tasks": 6,
        "workers": 1,
    }
    cli = [sys.executable, "-m", "langadapt.cli", "corpus"]
    recipes = {}
    for name in ("whole", "killed"):
        data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / name, corpus=sections, train={"replay_ratio": 0})
        recipes[name] = write_recipe(tmp_path / f"{name}.yaml", data)
    subprocess.run([*cli, str(recipes["whole"])], check=True, capture_output=True)

    done = RunDir(tmp_path / "killed").partial("corpus") / "work" / "logs" / "measure" / "completions"
    proc = subprocess.Popen([*cli, str(recipes["killed"])], start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and len(list(done.glob("*")) if done.is_dir() else []) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in done.iterdir())
    assert 2 <= len(finished) < 6, finished  # killed half-way through the pass
    measured = done.parents[2] / "measured"  # each task's measured documents, written when the task ends

    def files(folder):
        return {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in folder.glob("*.parquet")}

    before = files(measured)
    assert sorted(before) == [f"{r}.parquet" for r in finished]

    subprocess.run([*cli, str(recipes["killed"])], check=True, capture_output=True)
    whole, killed = RunDir(tmp_path / "whole").path("corpus"), RunDir(tmp_path / "killed").path("corpus")
    assert not RunDir(tmp_path / "killed").partial("corpus").exists()
    after = files(killed / "measured" / "documents")  # kept beside the output, moved there, not rewritten
    assert len(after) == 6 and all(after[name] == before[name] for name in before)  # finished tasks not redone
    for split in ("train", "heldout"):
        assert read_docs(killed / "nya" / f"{split}.parquet") == read_docs(whole / "nya" / f"{split}.parquet")
    assert read_json(killed / "stats.json")["languages"] == read_json(whole / "stats.json")["languages"]


def _tied_ngram_docs(n_docs: int = 40) -> list[dict[str, str]]:
    """Documents whose most frequent 2-, 3- and 4-grams tie in count but differ in length, each with its own words.

    Which of the tied n-grams is "the most frequent" decides the top-n-gram statistics, and with them the
    language's median and its derived thresholds; the document frequencies of the words tie too (stop words).
    """
    import random

    rng = random.Random(3)
    letters = "abcdefghijklmnoprstuvwyz"

    def word(n: int) -> str:
        return "".join(rng.choice(letters) for _ in range(n))

    docs = []
    for i in range(n_docs):
        short = [word(2) for _ in range(4)]
        long = [word(9) for _ in range(4)]
        filler = [word(rng.randint(3, 7)) for _ in range(30)]
        parts = [" ".join(short), " ".join(long)] * 3
        text = ". ".join(parts[:2] + filler[:15] + parts[2:] + filler[15:]).capitalize() + "."
        docs.append({"id": f"D{i}", "text": text, "book": f"B{i % 8}"})
    return docs


def test_corpus_stage_is_the_same_in_every_process(corpus_files, tiny_model, tmp_path):
    """Two processes with different string-hash seeds write byte-identical corpus outputs."""
    import os
    import subprocess
    import sys

    from conftest import tiny_recipe_dict, write_recipe

    source = tmp_path / "tied.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in _tied_ngram_docs()), encoding="utf-8")
    sections = {
        "target": {"path": str(source), "language": "nya", "group_field": "book"},
        "replay": None,
        "heldout_groups": ["B3"],
        "disable": ["lid"],
        "quality": {"derive": "median_ratio", "min_documents": 10},
    }
    outputs = []
    for seed in ("1", "2"):
        data = tiny_recipe_dict(corpus_files, tiny_model, tmp_path / f"run{seed}", corpus=sections)
        data["train"]["replay_ratio"] = 0
        recipe = write_recipe(tmp_path / f"r{seed}.yaml", data)
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-m", "langadapt.cli", "corpus", str(recipe)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        folder = RunDir(tmp_path / f"run{seed}").path("corpus")
        files = [f for f in sorted(folder.rglob("*")) if f.is_file() and f.name != ".complete.json"]  # it has a time
        outputs.append({str(f.relative_to(folder)): f.read_bytes() for f in files})
    assert sorted(outputs[0]) == sorted(outputs[1])
    differ = [name for name in outputs[0] if outputs[0][name] != outputs[1][name]]
    assert not differ, differ
