"""Benchmark the offline demo: wall time, quality against the base model, resume.

    python bench/demo.py                                  # one timed demo from a cold model cache
    python bench/demo.py --run-dir runs/bench-resume --interrupt-at 20 --reference runs/bench-demo
                                                          # kill after checkpoint 20, re-run, compare

    python bench/demo.py --report-only --export-check     # figures of a finished run, and its export

The baseline is the base model itself, evaluated in the same run on the same held-out
text: the targets are Chichewa bits/byte at least 25% below it and English (in-domain and
out-of-domain) at most 5% above it. Per-stage times come from the run's manifest; the peak
resident memory is the largest of the demo's processes. Besides bits per byte it prints the
evaluation's task table (base vs adapted, mean ± std over seeds) and the summary the report
opens with. `--export-check` exports the run (merged) and scores held-out Chichewa with the
exported folder in a fresh process, loaded with plain `AutoModelForCausalLM`: it must give
the bits per byte the eval stage measured. It then asks the exported model to continue
held-out Chichewa documents (each one whole, after the document separator, as in training)
and generates greedily past their end: no chat-template token (`<|im_start|>`, `<|im_end|>`)
may appear, where the document separator (`<|endoftext|>`) should.

    python bench/demo.py --generation-check FOLDER --run-dir runs/demo   # that check alone, on any model folder
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"nya-heldout": ("<=", -0.25), "eng-heldout": ("<=", 0.05), "eng-ood": ("<=", 0.05)}
LANGADAPT = str(Path(sys.executable).parent / "langadapt")  # the command of this environment, on PATH or not


def run_demo(run_dir: Path, env: dict[str, str], interrupt_at: int | None, sig: str, extra: list[str]) -> float:
    cmd = [LANGADAPT, "demo", "--run-dir", str(run_dir), *extra]
    t0 = time.time()
    if interrupt_at is None:
        subprocess.run(cmd, env=env, check=True)
        return time.time() - t0
    proc = subprocess.Popen(cmd, env=env)
    marker = run_dir / "train.partial" / "checkpoints" / f"step-{interrupt_at:06d}"
    while proc.poll() is None and not marker.is_dir():
        time.sleep(0.5)
    if proc.poll() is not None:
        sys.exit(f"demo ended before checkpoint {interrupt_at} appeared")
    proc.send_signal(getattr(signal, f"SIG{sig}"))
    code = proc.wait()
    print(f"killed with SIG{sig} after checkpoint {interrupt_at} (exit {code}); running again to resume", flush=True)
    subprocess.run(cmd, env=env, check=True)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-demo"), help="run directory (wiped first)")
    ap.add_argument("--warm-cache", action="store_true", help="reuse the imported model cache instead of a cold one")
    ap.add_argument(
        "--interrupt-at", type=int, default=None, help="kill the demo once this training checkpoint exists, then resume"
    )
    ap.add_argument(
        "--signal", default="TERM", choices=["INT", "TERM", "KILL"], help="how to kill it (KILL: no chance to clean up)"
    )
    ap.add_argument(
        "--reference", type=Path, default=None, help="an uninterrupted run directory to compare results with"
    )
    ap.add_argument("--set", action="append", default=[], help="recipe override passed to the demo")
    ap.add_argument(
        "--report-only", action="store_true", help="do not run: print the figures of the finished --run-dir"
    )
    ap.add_argument(
        "--export-check", action="store_true", help="export the run and score it in a fresh process (see above)"
    )
    ap.add_argument(
        "--generation-check",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="only continue --run-dir's held-out nya documents with the model in FOLDER (see above)",
    )
    args = ap.parse_args()
    if args.generation_check is not None:
        sys.exit(0 if generation_check(args.generation_check, args.run_dir) else 1)

    wall = None
    if not args.report_only:
        if args.run_dir.exists():
            shutil.rmtree(args.run_dir)
        env = dict(os.environ)
        if not args.warm_cache:
            env["LANGADAPT_CACHE"] = tempfile.mkdtemp(prefix="langadapt-cache-")
        extra = [x for s in args.set for x in ("--set", s)]
        wall = run_demo(args.run_dir, env, args.interrupt_at, args.signal, extra)

    manifest = json.loads((args.run_dir / "manifest.json").read_text())
    results = json.loads((args.run_dir / "eval" / "results.json").read_text())
    if wall is not None:
        print(
            f"\nwall time: {wall / 60:.1f} min ({'cold' if not args.warm_cache else 'warm'} model cache, {os.cpu_count()} cores)"
        )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        print(f"peak resident memory of the demo's processes: {peak:.2f} GiB")
    print("stage times from the manifest:")
    for stage, entry in manifest["stages"].items():
        print(f"  {stage:10s} {entry.get('seconds', 0):7.1f} s{'  (resumed)' if entry.get('resumed') else ''}")
    summary = json.loads((args.run_dir / "train" / "summary.json").read_text())
    session = summary["tokens_this_session"] / max(summary["seconds_this_session"], 1e-9)
    resumed = f", last session resumed at step {summary['resumed_from_step']}" if summary["resumed_from_step"] else ""
    print(
        f"training throughput: {session:.0f} tokens/s{resumed}; tokens trained per language: {summary.get('tokens', {})}"
    )
    for part, seconds in results.get("seconds", {}).items():
        print(f"  eval {part:24s} {seconds:7.1f} s wall  {results.get('cpu_seconds', {}).get(part, 0):7.1f} s CPU")
    print(f"\n{'set':14s} {'base':>8s} {'adapted':>8s} {'ratio':>7s}  target")
    ok = True
    for name, r in results["bits_per_byte"].items():
        op, limit = TARGETS.get(name, ("", None))
        passed = limit is None or r["relative_change"] <= limit
        ok &= passed
        target = f"change {op} {limit:+.0%} {'PASS' if passed else 'FAIL'}" if limit is not None else ""
        print(f"{name:14s} {r['base']:8.4f} {r['adapted']:8.4f} {r['adapted'] / r['base']:7.3f}  {target}")
    print_tasks(args.run_dir, results)
    if args.export_check:
        ok &= export_check(args.run_dir, results)
    if args.reference:
        ref = json.loads((args.reference / "eval" / "results.json").read_text())
        print("\nagainst the reference run:")
        for name, r in results["bits_per_byte"].items():
            other = ref["bits_per_byte"][name]["adapted"]
            print(
                f"  {name:14s} this {r['adapted']:.4f}  reference {other:.4f}  difference {r['adapted'] - other:+.5f}"
            )
    sys.exit(0 if ok else 1)


def print_tasks(run_dir: Path, results: dict) -> None:
    """The task table and the plain-language summary, exactly as the report shows them."""
    import yaml

    from langadapt.report.summary import summary_sentences, task_rows

    rows = results.get("tasks", [])
    for task in dict.fromkeys(r["task"] for r in rows):
        header, body = task_rows([r for r in rows if r["task"] == task], ["base", "adapted"])
        print(f"\ntask {task}:")
        print("  " + " | ".join(header))
        for cells in body:
            print("  " + " | ".join(c[1] if isinstance(c, tuple) else str(c) for c in cells))
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    replay = (recipe["corpus"].get("replay") or {}).get("language")
    print("\nsummary:")
    for sentence in summary_sentences(results, recipe["corpus"]["target"]["language"], replay):
        print(f"  {sentence}")


SCORE_EXPORTED = """
import json, sys
from pathlib import Path
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer
from langadapt.documents import read_docs
from langadapt.scoring.bpb import bits_per_byte
from langadapt.recipe import EvalConfig
folder, run_dir = sys.argv[1], Path(sys.argv[2])
recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())["eval"]
model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
kept, size = [], 0
for d in read_docs(run_dir / "corpus" / "nya" / "heldout.parquet"):
    if kept and size + len(d.text) > recipe["max_chars"]:
        break
    kept.append(d.text)
    size += len(d.text)
cfg = EvalConfig(context_length=recipe["context_length"], stride=recipe["stride"])
print(json.dumps(bits_per_byte(model, tok, kept, cfg)))
"""


GENERATE = """
import json, sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from langadapt.documents import read_docs
from langadapt.models.separator import chat_tokens, document_separator
folder, heldout, n_docs, n_new = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
sep = document_separator(tok)
chat = {tok.convert_tokens_to_ids(t): t for t in chat_tokens(tok)}
watch = {**chat, sep.id: sep.token}
docs = [d.text for d in read_docs(heldout)][:n_docs]
first, anywhere, p_end = {}, {}, {t: 0.0 for t in watch.values()}
with torch.no_grad():
    for text in docs:
        ids = torch.tensor([[sep.id] + tok(text, add_special_tokens=False)["input_ids"]])
        out = model(input_ids=ids, use_cache=True)
        past, logits, new = out.past_key_values, out.logits[0, -1], []
        probs = torch.softmax(logits.float(), -1)
        for i, t in watch.items():
            p_end[t] += probs[i].item() / len(docs)
        for _ in range(n_new):  # greedy, on past the document's end: a separator starts the next document
            nxt = int(logits.argmax())
            new.append(nxt)
            out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1]
        head = watch.get(new[0], "text")
        first[head] = first.get(head, 0) + 1
        for i in new:
            if i in chat:
                anywhere[chat[i]] = anywhere.get(chat[i], 0) + 1
print(json.dumps({"separator": sep.token, "chat_tokens": sorted(chat.values()), "documents": len(docs),
                  "first_token": first, "chat_tokens_generated": anywhere, "p_at_end": p_end}))
"""


def generation_check(folder: Path, run_dir: Path, n_docs: int = 16, n_new: int = 24) -> bool:
    """Continue held-out Chichewa documents with the model in `folder`: no chat-template token may be generated."""
    heldout = run_dir / "corpus" / "nya" / "heldout.parquet"
    out = subprocess.run(
        [sys.executable, "-c", GENERATE, str(folder), str(heldout), str(n_docs), str(n_new)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ok = not r["chat_tokens_generated"]
    print(
        f"\ncontinuing {r['documents']} whole held-out nya documents ({n_new} greedy tokens each), separator "
        f"{r['separator']}, chat tokens {', '.join(r['chat_tokens']) or 'none'}:"
    )
    print(f"  first token after the document: {r['first_token']}")
    print("  mean probability at the document's end: " + ", ".join(f"{t} {p:.4f}" for t, p in r["p_at_end"].items()))
    print(f"  chat tokens generated: {r['chat_tokens_generated'] or 'none'}: {'PASS' if ok else 'FAIL'}")
    return ok


def export_check(run_dir: Path, results: dict) -> bool:
    """Export (merged), then score held-out Chichewa and continue documents with the folder alone in fresh processes."""
    folder = Path(tempfile.mkdtemp(prefix="langadapt-export-")) / "model"
    subprocess.run([LANGADAPT, "export", str(run_dir), "--to", str(folder)], check=True)
    out = subprocess.run(
        [sys.executable, "-c", SCORE_EXPORTED, str(folder), str(run_dir)], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])["bits_per_byte"]
    want = results["bits_per_byte"]["nya-heldout"]["adapted"]
    same = abs(got - want) <= 1e-5 * want
    print(
        f"\nexported model, fresh process: nya-heldout {got:.6f} bits/byte, eval stage {want:.6f}: {'SAME' if same else 'DIFFERENT'}"
    )
    generates = generation_check(folder, run_dir)
    shutil.rmtree(folder.parent)
    return same and generates


if __name__ == "__main__":
    main()
