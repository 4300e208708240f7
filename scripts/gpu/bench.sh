#!/usr/bin/env bash
# The GPU numbers of records/bench/ (training-step benchmark, uvlm.perf.bench), on one GPU.
# Run from the repository root with uvlm importable:
#   OUT=records/bench bash scripts/gpu/bench.sh [NAME ...]   (default: eager compile d768 ksweep)
# Each benchmark NAME (see `one` below) gets its own time limit inside a BUDGET_S whole (a job
# of at most 10 minutes), so a slow compile cannot take the others with it; what finished is tarred
# into $OUT/bench-<first NAME>.tgz and each table copied to $OUT/NAME.md.
set -u
OUT=${OUT:-records/bench}
W=$(mktemp -d)
END=$((SECONDS + ${BUDGET_S:-570}))
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv

# bench NAME LIMIT_S ARGS...: one uvlm.perf.bench run into $W/NAME, cut at LIMIT_S or the whole's end.
bench() {
  local name=$1 limit=$2 start=$SECONDS; shift 2
  local left=$((END - SECONDS - 15))
  (( left < 60 )) && { echo "[$name] skipped: ${left}s left"; return; }
  (( limit > left )) && limit=$left
  timeout "$limit" python -m uvlm.perf.bench --preset gpu --steps 20 --out "$W/$name" "$@" > "$W/$name.log" 2>&1
  echo "[$name] exit $? after $((SECONDS - start)) s (limit $limit s): $*"
  cp "$W/$name"/*.md "$OUT/$name.md" 2>/dev/null
}
D768=(--set model.d_model=768 --set model.n_heads=12 --set model.n_kv_heads=12 --set model.ffn_hidden=2048)
# Twice as wide, half as deep (~0.4B params): attention's share of a layer's FLOPs halves with
# the width (L^2 d against L d^2), so HiMix's short-query attention weighs less in its step.
D2048=(--set model.d_model=2048 --set model.n_layers=8 --set model.n_heads=32 --set model.n_kv_heads=32
       --set model.ffn_hidden=5632)
# Twice as wide again and half as deep (~0.8B params): attention's share halves once more.
D4096=(--set model.d_model=4096 --set model.n_layers=4 --set model.n_heads=64 --set model.n_kv_heads=64
       --set model.ffn_hidden=11264)
D1024=(--set model.d_model=1024 --set model.n_layers=16 --set model.n_heads=16 --set model.n_kv_heads=16
       --set model.ffn_hidden=2816)
one() {
  case $1 in
    # Eager, every plan of the grid plus HMGen at K = 1, 4, 5, profiled: fast, and the fallback.
    eager) bench eager 100 --hmgen-ks 1,4,5 --profile ;;
    # Compile off vs on for every plan, bf16 autocast and fused AdamW (training's GPU defaults).
    compile) bench compile 290 --compare compile --profile ;;
    # ~86M params: MFU, and whether efficiency grows with the model.
    d768) bench d768 120 --compile --plans u_himix,g_hmgen_k3 --profile "${D768[@]}" ;;
    # The K sweep compiled (the compile cache of `compile` serves the baseline).
    ksweep) bench ksweep 90 --compile --plans g_base --hmgen-ks 1,4,5 ;;
    # 4x the batch, same kernels: if efficiency rises, the loss at batch 64 was fixed per-step cost.
    b256) bench b256 80 --batch-size 256 --plans u_himix,g_hmgen_k3,g_hmgen_k5 --profile ;;
    # ~200M params at batch 128, eager then compiled: MFU at a size the GPU is busy with.
    d1024e) bench d1024e 80 --batch-size 128 --plans u_himix --profile "${D1024[@]}" ;;
    d1024) bench d1024 170 --compile --batch-size 128 --plans u_himix --profile "${D1024[@]}" ;;
    d1024g) bench d1024g 170 --compile --batch-size 128 --plans g_hmgen_k3,g_hmgen_k5 --profile "${D1024[@]}" ;;
    # HiMix's two attention kernels side by side at ~200M, compiled (uvlm.model.attention.HIMIX_KERNELS),
    # 4 steps queued per timing as the training loop does.
    himix) bench himix 240 --compile --batch-size 128 --plans u_himix --compare himix --chunk 4 --profile "${D1024[@]}" ;;
    # HiMix at ~200M and twice the batch, compiled and queued: the optimizer's fixed time (which
    # caps HiMix near 92% of ideal at batch 128) is then half as large a share of the step.
    himix256) bench himix256 200 --compile --batch-size 256 --plans u_himix --chunk 4 --profile "${D1024[@]}" ;;
    # The same with HiMix attention in one FlexAttention kernel that computes the causal rule from
    # sequence indices (no mask tensor); run beside himix256 on the same machine.
    himix256flex) bench himix256flex 200 --compile --batch-size 256 --plans u_himix --himix flex --chunk 4 --profile "${D1024[@]}" ;;
    # HiMix at d2048 x 8 (head dim 64 as at d1024), batch 128, compiled and queued: does the
    # efficiency HiMix reaches grow with the width?
    himix2048) bench himix2048 300 --compile --batch-size 128 --plans u_himix --chunk 4 --steps 10 --profile "${D2048[@]}" ;;
    # HiMix's mask kernel against its rows kernel (the query rows split at the image, so that the
    # few text rows before it do not pad a whole query tile), at ~400M and ~200M, compiled and queued.
    himix2048rows) bench himix2048rows 280 --compile --batch-size 192 --plans u_himix --compare himix --values mask,rows --chunk 4 --steps 10 --profile "${D2048[@]}" ;;
    himix1024rows) bench himix1024rows 250 --compile --batch-size 128 --plans u_himix --compare himix --values mask,rows --chunk 4 --steps 10 --profile "${D1024[@]}" ;;
    # Where HiMix reaches 90% of its FLOPs-ideal speedup: wider models (attention's share falls) and
    # more sequences per step (the optimizer's per-parameter time is spread over more tokens). Batch
    # 384 needs an H200's memory (~96 GB at d4096, ~88 GB at d2048).
    himix2048b384) bench himix2048b384 170 --compile --batch-size 384 --plans u_himix --chunk 4 --steps 8 --profile "${D2048[@]}" ;;
    himix4096) bench himix4096 170 --compile --batch-size 192 --plans u_himix --chunk 4 --steps 8 --profile "${D4096[@]}" ;;
    himix4096b384) bench himix4096b384 230 --compile --batch-size 384 --plans u_himix --chunk 4 --steps 8 --profile "${D4096[@]}" ;;
    # The gpu preset's model, compile off vs on, 10 steps queued per timing: the training loop's
    # throughput, where the host queues the next step while the GPU runs this one.
    runahead) bench runahead 200 --compare compile --chunk 10 --plans u_himix,g_hmgen_k3 --profile ;;
    *) echo "unknown benchmark '$1': one of eager compile d768 ksweep b256 d1024e d1024 d1024g himix himix256 himix256flex himix2048 himix2048rows himix1024rows himix2048b384 himix4096 himix4096b384 runahead"; return 2 ;;
  esac
}
if (( $# )); then names=("$@"); else names=(eager compile d768 ksweep); fi
for name in "${names[@]}"; do one "$name"; done
tar czf "$OUT/bench-${names[0]}.tgz" -C "$W" .
