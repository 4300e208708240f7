#!/usr/bin/env bash
# The whole pipeline at the gpu preset, the way a user runs it, cut at LIMIT_S seconds. Every
# log line is stamped with the seconds since the start, so the log gives each stage's time.
# Run from the repository root of a throw-away copy (it switches params.yaml to the gpu preset):
#   OUT=figures/gpu LIMIT_S=560 bash figures/gpu/pipeline.sh
# Writes $OUT/repro.log and $OUT/pipeline.tgz (figures, dvc.lock, executed notebooks, run logs).
set -u
OUT=${OUT:-figures/gpu}
LIMIT=${LIMIT_S:-560}
mkdir -p "$OUT"
sed -i 's/^preset: cpu/preset: gpu/' params.yaml
git rev-parse --git-dir >/dev/null 2>&1 || dvc config --local core.no_scm true
export PYTHONUNBUFFERED=1
t0=$EPOCHSECONDS
timeout --kill-after=10 "$LIMIT" dvc repro 2>&1 \
  | while IFS= read -r line; do printf '%4d %s\n' $((EPOCHSECONDS - t0)) "$line"; done > "$OUT/repro.log"
echo "dvc repro: exit ${PIPESTATUS[0]} after $((EPOCHSECONDS - t0)) s (limit $LIMIT s)"
grep -E "Running stage|didn't change|ERROR|Error" "$OUT/repro.log" | head -40
tail -5 "$OUT/repro.log"
tar czf "$OUT/pipeline.tgz" --exclude=figures/bench --exclude=figures/gpu dvc.lock figures notebooks/executed \
  $(ls -d data/runs/*/seed*/*.csv data/runs/*/seed*/*.json data/world/*.json data/tokenizer/*.json 2>/dev/null)
