#!/usr/bin/env bash
# Does a change leave behaviour as it was? Runs the demo recipe's corpus, tokenizer, init and a
# short training (3 steps) with the code of two git revisions, with one PYTHONHASHSEED, in this
# environment, and compares every output file byte for byte (timings and absolute paths aside).
#
#   bash bench/same_behaviour.sh 59a5c29 HEAD          # prints SAME or DIFF per stage
#
# The corpus stage before 8f3a79f depended on Python's per-process hash(), hence the fixed seed.
set -euo pipefail
a=${1:?first revision}; b=${2:?second revision}; recipe=${RECIPE:-demo-nya-smollm2}
python=${PYTHON:-$(command -v python)}
work=$(mktemp -d)
for rev in "$a" "$b"; do
  mkdir -p "$work/$rev/code" && git archive "$rev" src | tar -x -C "$work/$rev/code"
  for stage in corpus tokenizer init train; do
    PYTHONHASHSEED=0 PYTHONPATH="$work/$rev/code/src" "$python" -m langadapt.cli "$stage" "$recipe" \
      --run-dir "$work/$rev/run" --set train.max_steps=3 --set train.save_every=3 --set train.warmup_steps=1 \
      >"$work/$rev/$stage.log" 2>&1 || { echo "$rev: stage $stage failed, see $work/$rev/$stage.log"; exit 1; }
  done
done
for stage in corpus tokenizer model-init train; do
  sums() { (cd "$1/$stage" && find . -type f ! -name .complete.json ! -name metrics.jsonl ! -name summary.json \
    ! -name init_report.json ! -name README.md ! -name adapter_config.json | sort | xargs sha256sum); }
  if diff <(sums "$work/$a/run") <(sums "$work/$b/run") >/dev/null; then echo "$stage: SAME"; else echo "$stage: DIFF"; fi
done
losses() { "$python" -c "import json,sys; [print(json.loads(l)['step'], json.loads(l)['loss']) for l in open(sys.argv[1])]" "$1"; }
if diff <(losses "$work/$a/run/train/metrics.jsonl") <(losses "$work/$b/run/train/metrics.jsonl") >/dev/null; then
  echo "training losses: SAME"; else echo "training losses: DIFF"; fi
echo "runs in $work"
