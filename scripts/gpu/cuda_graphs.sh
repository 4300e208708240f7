#!/usr/bin/env bash
# CUDA graphs (train.cuda_graphs, torch.compile's "reduce-overhead" mode) against plain compiled
# steps at the gpu preset, on one GPU, as the pipeline runs its train stages: three stages side
# by side, each training its three seeds side by side (nine processes on one GPU). Run from the
# repository root of a throw-away copy, with uvlm importable and dvc installed:
#   OUT=records/bench/cuda-graphs bash scripts/gpu/cuda_graphs.sh
# 1. `dvc repro tokenizer` at the gpu preset (the world and the tokenizer the stages read);
# 2. the training-step benchmark of the two baselines, compiled, with and without graphs, 10 steps
#    queued per timing (one process, the loop's throughput alone);
# 3. ROUNDS (default "compile graphs") in that order: runs RUNS (default u_base g_base u_himix)
#    trained from scratch at once through `python -m uvlm.perf.stage_timing`, one per run, every seed.
# Writes $OUT/<round>/<run>/stage_timing.{json,md}, $OUT/bench.md and $OUT/log.txt.
set -u
OUT=${OUT:-records/bench/cuda-graphs}
RUNS=${RUNS:-u_base g_base u_himix}
ROUNDS=${ROUNDS:-compile graphs}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
sed -i 's/^preset: cpu/preset: gpu/' params.yaml
git rev-parse --git-dir >/dev/null 2>&1 || dvc config --local core.no_scm true
t0=$SECONDS
dvc repro tokenizer > "$OUT/repro_tokenizer.log" 2>&1 || { tail -20 "$OUT/repro_tokenizer.log"; exit 1; }
echo "world and tokenizer: $((SECONDS - t0)) s"
if [ "${BENCH:-1}" = 1 ]; then
  t0=$SECONDS
  timeout "${BENCH_LIMIT_S:-150}" python -m uvlm.perf.bench --preset gpu --compile --compare cuda_graphs --chunk 10 \
    --steps 10 --plans u_base,g_base --out "$OUT/bench" > "$OUT/bench.log" 2>&1
  echo "bench: exit $? after $((SECONDS - t0)) s"
  cp "$OUT"/bench/*.md "$OUT/bench.md" 2>/dev/null && cat "$OUT/bench.md"
fi
for round in $ROUNDS; do
  t0=$SECONDS
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 1 > "$OUT/gpu_$round.csv" &
  smi=$!
  for run in $RUNS; do
    python -m uvlm.perf.stage_timing --runs "$run" --settings "$round" --out "scratch/cuda_graphs/$round/$run" \
      --set preset=gpu > "$OUT/${round}_$run.log" 2>&1 &
  done
  wait $(jobs -p | grep -v "^$smi$")
  kill $smi
  echo "round $round: $((SECONDS - t0)) s for $RUNS at once"
  for run in $RUNS; do
    mkdir -p "$OUT/$round/$run"
    cp scratch/cuda_graphs/"$round/$run"/stage_timing.* "$OUT/$round/$run/" 2>/dev/null \
      && cat "$OUT/$round/$run/stage_timing.md" || tail -15 "$OUT/${round}_$run.log"
  done
done
