"""Generation samples: prompts fixed by the held-out set alone, greedy continuations that are the
argmax loop and end at an end-of-text token, and the results and report that carry them."""

from __future__ import annotations

import pytest
import torch

from langadapt.evaluate.samples import choose_prompts, continue_greedily, opening


def _docs() -> list[str]:
    words = "the king said to the people of the land that a great light came over the river".split()
    return [" ".join(words[i % 5 :] + words[: i % 5]) + f" and day {i} ended." for i in range(10)]


def test_prompts_are_a_pure_function_of_the_held_out_set():
    docs = _docs()
    prompts = choose_prompts("eng-heldout", "eng", docs, 3, 40)
    assert prompts == choose_prompts("eng-heldout", "eng", list(docs), 3, 40)  # the same in every run
    assert [p.document for p in prompts] == [0, 3, 6]  # spread evenly: document i * n // count
    for p in prompts:
        doc = docs[p.document]
        assert doc.startswith(p.text) and len(p.text) <= 40 and doc[len(p.text)] == " "  # ends with a whole word
        assert doc[len(p.text) :].startswith(p.reference)  # how the document really goes on
    assert [p.document for p in choose_prompts("s", "eng", docs[:2], 3, 40)] == [0, 1]  # no document twice
    assert choose_prompts("s", "eng", docs, 0, 40) == []


def test_the_opening_is_cut_at_a_boundary_in_scripts_with_and_without_spaces():
    assert opening("the man went to the city and saw the house", 20) == "the man went to the"
    assert opening("short text ", 20) == "short text"
    # Chinese: no spaces, cut after the last punctuation mark in the second half of the limit
    assert opening("我们的国家很大，人口也很多。这是一个没有空格的句子", 16) == "我们的国家很大，人口也很多。"
    # no space, no punctuation: the limit, moved back so a combining mark keeps its base letter
    # and a Thai vowel written before its consonant keeps the consonant
    assert opening("abcdefghi\u0301jkl", 9) == "abcdefgh"
    assert opening("สวัสดีครับนี่คือประโยคทดสอบ", 19) == "สวัสดีครับนี่คือประ"


def _argmax_loop(model, tok, prompt: str, n: int, stops: set[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """The definition: after the separator, append the most likely next token until a stop token or n tokens."""
    ids = [tok.eos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]  # tiny: eos is the separator
    new: list[int] = []
    with torch.no_grad():
        while len(new) < n:
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt in stops:
                break
    return new


def test_greedy_continuation_is_the_argmax_loop_whatever_the_models_generation_defaults(tiny_model):
    """Prompts of different lengths continued together (padded on the left) each get their own argmax loop."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    # sampling and a repetition penalty among the model's defaults would change the continuation: they are not used
    model.generation_config.update(do_sample=True, temperature=0.7, repetition_penalty=3.0, top_k=5)
    prompts = ["the man went to the city and", "Ndikuyenda", "a great king said to the people of the land"]
    got = continue_greedily(model, tok, prompts, 12)
    for prompt, c in zip(prompts, got):
        want = _argmax_loop(model, tok, prompt, 12, {tok.eos_token_id})
        assert c.ids == want and c.new_tokens == 12 and c.stopped_by == ""
        assert c.text == tok.decode(want)
        assert c.prompt_tokens == 1 + len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert any(len(set(c.ids)) < len(c.ids) for c in got)  # repeats a token: a penalty of 3.0 would have changed it


def test_an_end_of_text_token_ends_the_continuation_and_the_prompts_separator_does_not(tiny_model):
    """The prompt starts with the separator (the tiny tokenizer's eos, an end-of-text token); only a generated one
    stops. A hook makes the fourth generated token the separator: the continuation is the first three."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    free = continue_greedily(model, tok, ["the king said"], 8)[0]
    calls = []

    def end_at_fourth(module, args, output):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 4:  # one forward per generated token (the first reads the whole prompt)
            output.logits[:, -1, tok.eos_token_id] += 1e4
        return output

    handle = model.register_forward_hook(end_at_fourth)
    try:
        ended = continue_greedily(model, tok, ["the king said"], 8)[0]
    finally:
        handle.remove()
    assert ended.ids == free.ids[:3] + [tok.eos_token_id] and ended.stopped_by == "<|endoftext|>"
    assert ended.new_tokens == 4 and ended.text == tok.decode(free.ids[:3])


def test_eval_stores_the_same_prompts_continued_by_base_and_adapted_and_the_report_shows_them(finished_run):
    import html

    from langadapt.evaluate.flow import eval_sets, sample_prompts
    from langadapt.recipe import Recipe
    from langadapt.rundir import RunDir, read_json

    run_dir, recipe_file, _ = finished_run
    recipe = Recipe.from_yaml(recipe_file)
    results = read_json(run_dir / "eval" / "results.json")
    samples = results["samples"]
    assert (samples["decoding"], samples["max_new_tokens"], samples["count"]) == ("greedy", 40, 3)
    # the target's and the replay's held-out sets, not the evaluation-only extra set; prompts chosen afresh agree
    assert set(samples["sets"]) == {"nya-heldout", "eng-heldout"}
    again = sample_prompts(eval_sets(recipe, RunDir(recipe.resolved_run_dir)), recipe.eval)
    stored = [(n, p["document"], p["prompt"]) for n, s in samples["sets"].items() for p in s["prompts"]]
    assert stored == [(p.set_name, p.document, p.text) for p in again] and len(stored) == 6
    for s in samples["sets"].values():
        for p in s["prompts"]:
            # every model the evaluation compared (base, adapted, and any a test added to the shared run)
            assert set(p["continuations"]) == set(results["models"]) and {"base", "adapted"} <= set(results["models"])
            assert all(0 < c["new_tokens"] <= 40 and c["text"] for c in p["continuations"].values())
    assert "base: samples" in results["seconds"] and "adapted: samples" in results["seconds"]
    page = (run_dir / "report" / "index.html").read_text()
    assert "<h2>Generation samples</h2>" in page
    first = samples["sets"]["nya-heldout"]["prompts"][0]
    row = "".join(f"<td>{html.escape(first[k])}</td>" for k in ("prompt", "reference"))
    assert row + f"<td>{html.escape(first['continuations']['base']['text'])}<br>" in page


def test_the_option_changes_the_eval_fingerprint_and_bad_values_are_refused(tiny_recipe, monkeypatch):
    from langadapt.errors import ConfigError
    from langadapt.evaluate import flow
    from langadapt.rundir import RunDir, fingerprint

    monkeypatch.setattr(RunDir, "fingerprint_of", lambda self, stage: f"{stage}-done")  # upstream stages finished
    on, off, longer = (
        tiny_recipe(),
        tiny_recipe(eval={"samples": {"count": 0}}),
        tiny_recipe(eval={"samples": {"max_new_tokens": 80}}),
    )
    rd = RunDir(on.resolved_run_dir)
    prints = {fingerprint("eval", flow.inputs(r, rd)) for r in (on, off, longer)}
    assert on.eval.samples.count == 3 and len(prints) == 3  # a changed option re-runs eval (and so the report)
    with pytest.raises(ConfigError) as bad:
        tiny_recipe(eval={"samples": {"count": -1}})
    assert "eval.samples.count: must be >= 0 (0: no generation samples)" in str(bad.value)
    with pytest.raises(ConfigError) as bad:
        tiny_recipe(eval={"samples": {"max_new_tokens": 0, "prompt_chars": 5}})
    assert "eval.samples.max_new_tokens: must be >= 1" in str(bad.value) and "eval.samples.prompt_chars" in str(
        bad.value
    )
    tiny_recipe(eval={"samples": {"count": 0, "max_new_tokens": 0}})  # turned off: the rest is not looked at


def test_prompts_come_from_the_held_out_sets_and_none_when_turned_off(tiny_recipe):
    from langadapt.evaluate.flow import EvalSet, sample_prompts

    sets = [
        EvalSet("nya-heldout", "nya", "target-heldout", _docs(), 0, 0),
        EvalSet("eng-heldout", "eng", "replay-heldout", _docs()[:2], 0, 0),
        EvalSet("eng-ood", "eng", "extra", _docs(), 0, 0),
    ]
    got = sample_prompts(sets, tiny_recipe().eval)
    assert [(p.set_name, p.document) for p in got] == [("nya-heldout", 0), ("nya-heldout", 3), ("nya-heldout", 6)] + [
        ("eng-heldout", 0),
        ("eng-heldout", 1),
    ]
    assert sample_prompts(sets, tiny_recipe(eval={"samples": {"count": 0}}).eval) == []
