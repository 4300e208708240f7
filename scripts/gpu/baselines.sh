#!/usr/bin/env bash
# The three baselines (U-only, G-only, unified) at the gpu preset, one seed, through the same
# `dvc repro` path as the full pipeline, plus the attention profile of the unified model.
# Run from the repository root of a throw-away copy (it rewrites params.yaml):
#   OUT=records/gpu LIMIT_S=540 bash scripts/gpu/baselines.sh
# Writes $OUT/baselines.log and $OUT/baselines.tgz (figures, metrics, dvc.lock, run logs).
set -u
OUT=${OUT:-records/gpu}
LIMIT=${LIMIT_S:-540}
mkdir -p "$OUT"
python3 - <<'PY'
import yaml
d = yaml.safe_load(open("params.yaml"))
d["preset"] = "gpu"
d["train"]["seeds"] = [0]
d["probe"]["threads"] = 8  # the probe trains on the CPU; the GPU machine has cores to spare
d["runs"] = {k: v for k, v in d["runs"].items() if k in ("u_base", "g_base", "ug_base")}
open("params.yaml", "w").write(yaml.safe_dump(d, sort_keys=False))
PY
git rev-parse --git-dir >/dev/null 2>&1 || dvc config --local core.no_scm true
export PYTHONUNBUFFERED=1
t0=$EPOCHSECONDS
timeout --kill-after=10 "$LIMIT" dvc repro eval@u_base eval@g_base eval@ug_base attention 2>&1 \
  | while IFS= read -r line; do printf '%4d %s\n' $((EPOCHSECONDS - t0)) "$line"; done > "$OUT/baselines.log"
echo "dvc repro: exit ${PIPESTATUS[0]} after $((EPOCHSECONDS - t0)) s (limit $LIMIT s)"
grep -E "Running stage|ERROR|Error" "$OUT/baselines.log" | head -20
tail -3 "$OUT/baselines.log"
tar czf "$OUT/baselines.tgz" --exclude=records/bench --exclude=records/gpu --exclude=records/sweeps \
  dvc.lock params.yaml figures \
  $(ls -d data/runs/*/seed*/*.csv data/runs/*/seed*/*.json data/world/*.json data/tokenizer/*.json 2>/dev/null)
