#!/usr/bin/env bash
# The synergy sweep at the gpu preset, the way a user runs it (`dvc repro sweep`), cut at LIMIT_S
# seconds. Run it again and it resumes: finished jobs are reused, the job in flight resumes from
# its last checkpoint. Run from the repository root of a throw-away copy (it switches params.yaml
# to the gpu preset):
#   OUT=/tmp/out LIMIT_S=560 bash scripts/gpu/sweep.sh
# SINGLE=1 resumes the sweep stage alone (`dvc repro --single-item sweep`) once an earlier call on
# the same machine has built the data, tokenizer and priors: a fresh copy of the tree puts back the
# committed cpu-preset figures that the data stage writes, so DVC would otherwise rebuild the data.
# STEP_MATCHED=1 adds the step-matched control (sweep.step_matched: true; 24 more jobs).
# Writes $OUT/sweep.log (each line stamped with seconds since the start) and $OUT/sweep.tgz
# (figures/sweep, the metrics, dvc.lock, executed notebooks, every job's result.json).
set -u
OUT=${OUT:-records/gpu}
LIMIT=${LIMIT_S:-560}
mkdir -p "$OUT" data
sed -i 's/^preset: cpu/preset: gpu/; s/^  enabled: null/  enabled: true/' params.yaml
[ -n "${STEP_MATCHED:-}" ] && sed -i 's/^  step_matched: null/  step_matched: true/' params.yaml
git rev-parse --git-dir >/dev/null 2>&1 || dvc config --local core.no_scm true
# A copy of the tree replaces dvc.lock on every call; keep the gpu one beside the (kept) data.
[ -f data/.gpu-dvc.lock ] && cp data/.gpu-dvc.lock dvc.lock
export PYTHONUNBUFFERED=1
t0=$EPOCHSECONDS
dvc status 2>&1 | head -20 | sed 's/^/   dvc status: /' >> "$OUT/sweep.log"
timeout --kill-after=15 "$LIMIT" dvc repro ${SINGLE:+--single-item} sweep 2>&1 \
  | while IFS= read -r line; do printf '%4d %s\n' $((EPOCHSECONDS - t0)) "$line"; done >> "$OUT/sweep.log"
echo "dvc repro sweep: exit ${PIPESTATUS[0]} after $((EPOCHSECONDS - t0)) s (limit $LIMIT s)"
cp dvc.lock data/.gpu-dvc.lock
grep -E "Running stage|didn't change|ERROR|Error|jobs already" "$OUT/sweep.log" | tail -20
ls data/sweep/jobs 2>/dev/null | wc -l
tar czf "$OUT/sweep.tgz" dvc.lock $(ls -d figures/sweep figures/metrics/sweep.json figures/metrics/text_prior.json \
  figures/world_samples.png figures/tokenizer_recon.png notebooks/executed/0[78]_*.ipynb data/sweep/jobs/*/result.json \
  data/sweep/jobs/*/train/*.csv data/priors/*/*/prior_summary.json 2>/dev/null)
