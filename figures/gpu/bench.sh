#!/usr/bin/env bash
# The GPU numbers of figures/bench/ (training-step benchmark, uvlm.bench), on one GPU.
# Run from the repository root with uvlm importable:  OUT=figures/bench bash figures/gpu/bench.sh
# Each benchmark gets its own time limit, inside a 570 s whole (one device command), so a
# slow compile cannot take the others with it; what finished is tarred into $OUT/bench.tgz.
set -u
OUT=${OUT:-figures/bench}
W=$(mktemp -d)
END=$((SECONDS + ${BUDGET_S:-570}))
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv

# bench NAME LIMIT_S ARGS...: one uvlm.bench run into $W/NAME, cut at LIMIT_S or the whole's end.
bench() {
  local name=$1 limit=$2 start=$SECONDS; shift 2
  local left=$((END - SECONDS - 15))
  (( left < 60 )) && { echo "[$name] skipped: ${left}s left"; return; }
  (( limit > left )) && limit=$left
  timeout "$limit" python -m uvlm.bench --preset gpu --steps 20 --out "$W/$name" "$@" > "$W/$name.log" 2>&1
  echo "[$name] exit $? after $((SECONDS - start)) s (limit $limit s): $*"
  cp "$W/$name"/*.md "$OUT/$name.md" 2>/dev/null
}
D768=(--set model.d_model=768 --set model.n_heads=12 --set model.n_kv_heads=12 --set model.ffn_hidden=2048)
D1024=(--set model.d_model=1024 --set model.n_layers=16 --set model.n_heads=16 --set model.n_kv_heads=16
       --set model.ffn_hidden=2816)
# 1. Eager, every plan of the grid plus HMGen at K = 1, 4, 5, profiled: fast, and the fallback.
bench eager 100 --hmgen-ks 1,4,5 --profile
# 2. Compile off vs on for every plan, bf16 autocast and fused AdamW (training's GPU defaults).
bench compile 290 --compare compile --profile
# 3. ~86M params: MFU, and whether efficiency grows with the model.
bench d768 120 --compile --plans u_himix,g_hmgen_k3 --profile "${D768[@]}"
# 4. The K sweep compiled (the compile cache of 2 serves the baseline).
bench ksweep 90 --compile --plans g_base --hmgen-ks 1,4,5
# 5. ~200M params, baselines only.
bench d1024 120 --compile --plans u_base,g_base "${D1024[@]}"
tar czf "$OUT/bench.tgz" -C "$W" .
