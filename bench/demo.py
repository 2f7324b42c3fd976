"""Benchmark the offline demo: wall time, quality against the base model, resume.

    python bench/demo.py                                  # one timed demo from a cold model cache
    python bench/demo.py --run-dir runs/bench-resume --interrupt-at 20 --reference runs/bench-demo
                                                          # kill after checkpoint 20, re-run, compare

The baseline is the base model itself, evaluated in the same run on the same held-out
text: the targets are Chichewa bits/byte at least 25% below it and English (in-domain and
out-of-domain) at most 5% above it. Per-stage times come from the run's manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"nya-heldout": ("<=", -0.25), "eng-heldout": ("<=", 0.05), "eng-ood": ("<=", 0.05)}


def run_demo(run_dir: Path, env: dict[str, str], interrupt_at: int | None, sig: str, extra: list[str]) -> float:
    cmd = ["langadapt", "demo", "--run-dir", str(run_dir), *extra]
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
    args = ap.parse_args()

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
    print("stage times from the manifest:")
    for stage, entry in manifest["stages"].items():
        print(f"  {stage:10s} {entry.get('seconds', 0):7.1f} s{'  (resumed)' if entry.get('resumed') else ''}")
    summary = json.loads((args.run_dir / "train" / "summary.json").read_text())
    session = summary["tokens_this_session"] / max(summary["seconds_this_session"], 1e-9)
    resumed = f", last session resumed at step {summary['resumed_from_step']}" if summary["resumed_from_step"] else ""
    print(
        f"training throughput: {session:.0f} tokens/s{resumed}; tokens trained per language: {summary.get('tokens', {})}"
    )
    print(f"\n{'set':14s} {'base':>8s} {'adapted':>8s} {'ratio':>7s}  target")
    ok = True
    for name, r in results["bits_per_byte"].items():
        op, limit = TARGETS.get(name, ("", None))
        passed = limit is None or r["relative_change"] <= limit
        ok &= passed
        target = f"change {op} {limit:+.0%} {'PASS' if passed else 'FAIL'}" if limit is not None else ""
        print(f"{name:14s} {r['base']:8.4f} {r['adapted']:8.4f} {r['adapted'] / r['base']:7.3f}  {target}")
    if args.reference:
        ref = json.loads((args.reference / "eval" / "results.json").read_text())
        print("\nagainst the reference run:")
        for name, r in results["bits_per_byte"].items():
            other = ref["bits_per_byte"][name]["adapted"]
            print(
                f"  {name:14s} this {r['adapted']:.4f}  reference {other:.4f}  difference {r['adapted'] - other:+.5f}"
            )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
