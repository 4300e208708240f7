#!/usr/bin/env bash
# The whole pipeline at the gpu preset, the way a user runs it, cut at LIMIT_S seconds. Every
# log line is stamped with the seconds since the start, so the log gives each stage's time.
# Run from the repository root of a throw-away copy (it switches params.yaml to the gpu preset):
#   OUT=records/gpu LIMIT_S=560 bash scripts/gpu/pipeline.sh
# Run it again on the same machine and it resumes: DVC skips finished stages and a cut train
# stage resumes from its checkpoints. A fresh copy of the tree puts back the committed cpu-preset
# dvc.lock, figures and executed notebooks, so the gpu ones are kept beside the data
# (data/.gpu-state) and restored first.
# STEP_MATCHED=1 adds the step-matched control to the grid: the U-only and G-only baselines at twice
# the epochs (runs u_base_x2 and g_base_x2, `epochs_factor: 2`), about 6 more minutes on an H100.
# KEEP_RUNS="u_base g_base ug_base" keeps only those runs of params.yaml's grid (before the
# step-matched ones are added), e.g. for the control alone.
# JOBS=3 runs independent stages side by side (python -m uvlm.pipeline.repro --jobs 3; each
# stage's output then goes to notebooks/executed/logs/); TRAIN_JOBS=3 with a larger JOBS caps the
# train stages at 3 while evaluations fill the other places (--limit train=3). Ready stages start
# longest critical path first, from the durations in notebooks/executed/logs/stage_seconds.json,
# first copied from HISTORY (default: the parallel record's, records/gpu/parallel/stage_seconds.json).
# COMPILE=1 sets train.compile: true; CUDA_GRAPHS=1 (with COMPILE=1) also train.cuda_graphs: true.
# Writes $OUT/repro.log and $OUT/pipeline.tgz (params.yaml, figures, dvc.lock, executed notebooks,
# run logs); `bash scripts/gpu/record.sh $OUT/pipeline.tgz DEST LOGS...` lays out a record folder.
set -u
OUT=${OUT:-records/gpu}
LIMIT=${LIMIT_S:-560}
STATE=data/.gpu-state
mkdir -p "$OUT" data
sed -i 's/^preset: cpu/preset: gpu/' params.yaml
if [ -n "${KEEP_RUNS:-}" ]; then
  grid=" $(sed -n '/^runs:/,$p' params.yaml | sed -n 's/^  \([A-Za-z0-9_]*\):.*/\1/p' | tr '\n' ' ')"
  for name in $KEEP_RUNS; do
    [[ $grid == *" $name "* ]] || { echo "KEEP_RUNS: '$name' is not a run of params.yaml; one of:$grid"; exit 2; }
  done
  # Drop every entry of the runs: section (a `  name:` line and its deeper lines) not named.
  awk -v keep=" $KEEP_RUNS " '
    /^[a-z]/ { inruns = ($0 ~ /^runs:/); skip = 0 }
    inruns && /^  [A-Za-z0-9_]+:/ { name = $1; sub(/:.*/, "", name); skip = index(keep, " " name " ") == 0 }
    inruns && skip && /^  / { next }
    { print }' params.yaml > params.yaml.tmp && mv params.yaml.tmp params.yaml
  echo "runs kept: $(sed -n '/^runs:/,$p' params.yaml | grep -c '^  [A-Za-z0-9_]*:')"
fi
if [ "${STEP_MATCHED:-0}" = 1 ] && ! grep -q '^  u_base_x2:' params.yaml; then
  # runs: is the last section of params.yaml, so the two runs can be appended to it.
  tail -n 1 params.yaml | grep -q '^  ' && [ "$(grep -n '^[a-z]' params.yaml | tail -n 1 | cut -d: -f2)" = runs ] \
    || { echo "params.yaml does not end with its runs: section; add the step-matched runs by hand"; exit 2; }
  printf '%s\n' '  u_base_x2: {task: u, accel: base, epochs_factor: 2.0}' \
                 '  g_base_x2: {task: g, accel: base, epochs_factor: 2.0}' >> params.yaml
fi
if [ "${COMPILE:-0}" = 1 ]; then
  sed -i 's/^  compile: null/  compile: true/' params.yaml
  grep -q '^  compile: true' params.yaml || { echo "COMPILE=1: no '  compile: null' line in params.yaml's train: section"; exit 2; }
fi
if [ "${CUDA_GRAPHS:-0}" = 1 ]; then
  [ "${COMPILE:-0}" = 1 ] || { echo "CUDA_GRAPHS=1 needs COMPILE=1 (the graphs are torch.compile's)"; exit 2; }
  sed -i 's/^  cuda_graphs: null/  cuda_graphs: true/' params.yaml
  grep -q '^  cuda_graphs: true' params.yaml || { echo "CUDA_GRAPHS=1: no '  cuda_graphs: null' line in params.yaml's train: section"; exit 2; }
fi
JOBS=${JOBS:-1}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "JOBS='$JOBS': expected an integer >= 1"; exit 2; }
if [ "$JOBS" = 1 ]; then REPRO=(dvc repro); else REPRO=(python -m uvlm.pipeline.repro --jobs "$JOBS"); fi
if [ -n "${TRAIN_JOBS:-}" ]; then
  [ "$JOBS" != 1 ] || { echo "TRAIN_JOBS needs JOBS > 1"; exit 2; }
  REPRO+=(--limit "train=$TRAIN_JOBS")
fi
git rev-parse --git-dir >/dev/null 2>&1 || dvc config --local core.no_scm true
if [ -f "$STATE/dvc.lock" ]; then
  echo "resuming: restoring dvc.lock, figures and executed notebooks from $STATE"
  cp "$STATE/dvc.lock" dvc.lock
  cp -a "$STATE/figures/." figures/ && cp -a "$STATE/executed/." notebooks/executed/
fi
HISTORY=${HISTORY:-records/gpu/parallel/stage_seconds.json}
if [ "$JOBS" != 1 ] && [ -f "$HISTORY" ] && [ ! -f notebooks/executed/logs/stage_seconds.json ]; then
  mkdir -p notebooks/executed/logs && cp "$HISTORY" notebooks/executed/logs/stage_seconds.json
fi
export PYTHONUNBUFFERED=1
t0=$EPOCHSECONDS
timeout --kill-after=10 "$LIMIT" "${REPRO[@]}" 2>&1 \
  | while IFS= read -r line; do printf '%4d %s\n' $((EPOCHSECONDS - t0)) "$line"; done >> "$OUT/repro.log"
echo "${REPRO[*]}: exit ${PIPESTATUS[0]} after $((EPOCHSECONDS - t0)) s (limit $LIMIT s)"
rm -rf "$STATE" && mkdir -p "$STATE/executed"
cp dvc.lock "$STATE/" && cp -a figures "$STATE/figures" && cp -a notebooks/executed/. "$STATE/executed/"
grep -E "Running stage|didn't change|] start: |] done: |FAILED|ERROR|Error" "$OUT/repro.log" | tail -40
tail -5 "$OUT/repro.log"
tar czf "$OUT/pipeline.tgz" --exclude=records/bench --exclude=records/gpu params.yaml dvc.lock figures notebooks/executed \
  $(ls -d data/runs/*/seed*/*.csv data/runs/*/seed*/*.json data/runs/*/logs/*.log data/evals/*/seed*/*.json \
       data/world/*.json data/tokenizer/*.json \
       data/sweep/jobs/*/result.json data/sweep/jobs/*/train/*.csv data/sweep/jobs/*/train/*.json 2>/dev/null)
