#!/usr/bin/env bash
# One-at-a-time versus shared-GPU speed of sweep jobs. After `scripts/gpu/sweep.sh` on the same
# machine, re-train the named finished jobs alone (all host cores, nothing else on the GPU) and set
# their training time beside the one they took while sharing the GPU with the pool:
#   OUT=/tmp/out bash scripts/gpu/sweep_concurrency.sh u-256x6-n8000-np-s0 u-384x12-n8000-np-s0
# Writes $OUT/concurrency.json. The shared run's result is kept; the solo one goes to $OUT.
set -euo pipefail
OUT=${OUT:-records/gpu}
mkdir -p "$OUT"
for id in "$@"; do
  d=data/sweep/jobs/$id
  mv "$d" "$d.shared"
  job=$(python -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["settings"]["job"]))' "$d.shared/result.json")
  python -m uvlm.sweep.job --params params.yaml --job "$job" --threads "$(nproc)"
  rm -rf "$OUT/solo-$id" && mv "$d" "$OUT/solo-$id" && mv "$d.shared" "$d"
done
python - "$OUT" "$@" <<'PY'
import json, sys
from pathlib import Path
out, ids = Path(sys.argv[1]), sys.argv[2:]
conc = __import__("uvlm.core.config", fromlist=["load_config"]).load_config("params.yaml").sweep.concurrency
rows = []
for jid in ids:
    shared = json.loads(Path(f"data/sweep/jobs/{jid}/result.json").read_text())
    solo = json.loads((out / f"solo-{jid}" / "result.json").read_text())
    rows.append({"job": jid, "device": solo["device_name"], "concurrency": conc,
                 "train_s_shared": round(shared["train_time_s"], 1), "train_s_alone": round(solo["train_time_s"], 1),
                 "slowdown_when_shared": round(shared["train_time_s"] / solo["train_time_s"], 2),
                 # With every slot busy, the pool finishes `conc` jobs in the time one shared job takes.
                 "pool_throughput_vs_one_at_a_time": round(conc * solo["train_time_s"] / shared["train_time_s"], 2)})
(out / "concurrency.json").write_text(json.dumps(rows, indent=1))
print(json.dumps(rows, indent=1))
PY
