#!/usr/bin/env bash
# One run trained on 1 GPU and on 2 GPUs (accelerate, bf16) at the same seed and global batch,
# compared by uvlm.train.ddp_check: loss agreement and throughput ratio. Run from the repository root
# on a 2-GPU machine with uvlm and accelerate importable:
#   OUT=records/bench bash scripts/gpu/ddp.sh [d384 threads notebook launcher launcherN d768 d1024]   (default: all)
# (launcherN: the launcher check with N CPU threads per forked process; a name may repeat)
# Writes $OUT/ddp-<gpu>-d384.json/.md (the gpu preset's model), -notebook (the same through
# notebook 03 and accelerate.notebook_launcher), -d768 (~86M params), -d1024 (~207M params) and $OUT/ddp-logs.tgz (the runs' logs).
set -u
OUT=${OUT:-records/bench}
W=${W:-/tmp/uvlm-ddp}
RUN=${RUN:-u_base}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$W" "$OUT"
# The gpu preset's world and sequence shapes; a short probe and tokenizer, since this check
# needs data shaped like the real runs, not the best image codes.
cat > "$W/params.yaml" <<YAML
preset: gpu
probe: {steps: 50, threads: 8}
tokenizer: {steps: 600, threads: 8}
train: {epochs: 2.0, eval_every: 50, ckpt_every: 100000, snapshots: 0}
runs:
  u_base: {task: u, accel: base}
  ug_base: {task: ug, accel: base}
attention: {run: u_base}
YAML
nvidia-smi --query-gpu=name,memory.total --format=csv
nvidia-smi topo -m
t0=$SECONDS
timeout 240 python - "$W/params.yaml" <<'PY'
import sys
from uvlm.core.config import load_config
from uvlm.probe.model import load_probe
from uvlm.probe.build import build_probe, probe_dir, probe_path
from uvlm.tokens.vq_build import build_tokenizer
from uvlm.world.build import build_world
cfg = load_config(sys.argv[1])
world = cfg.paths.data / "world"
build_world(cfg.world, cfg.seed, world, progress=False)
build_probe(cfg.world, cfg.probe, cfg.seed, probe_dir(cfg), progress=False)
build_tokenizer(cfg.tokenizer, cfg.seed, world, cfg.paths.data / "tokenizer",
                probe=load_probe(probe_path(cfg)), progress=False)
PY
echo "[data+tokenizer] exit $? after $((SECONDS - t0)) s"
SLUG=$(python -c "import torch; from uvlm.core.devices import device_slug; print(device_slug(torch.cuda.get_device_name()))")
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)

# uvlm.train.cli on both GPUs through accelerate (DDP, bf16); an array, so `timeout` can run it.
TWO_GPUS=(accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision bf16
          --dynamo_backend no -m uvlm.train.cli)
# pair TAG LIMIT_S SETS...: the run on GPU 0 alone, then on both GPUs, then on one GPU at the
# seeds of NOISE_SEEDS (default "1"; the noise the 1-vs-2-GPU gap is judged against), then the check.
pair() {
  local tag=$1 limit=$2; shift 2
  local args=(--params "$W/params.yaml" --run "$RUN" --no-progress "$@")
  local s=$SECONDS
  CUDA_VISIBLE_DEVICES=0 timeout "$limit" python -m uvlm.train.cli "${args[@]}" --seed 0 --out "$W/runs/$tag-1gpu" \
    > "$W/$tag-1gpu.log" 2>&1
  echo "[$tag 1 GPU] exit $? after $((SECONDS - s)) s"; s=$SECONDS
  timeout "$limit" "${TWO_GPUS[@]}" "${args[@]}" --seed 0 --out "$W/runs/$tag-2gpu" > "$W/$tag-2gpu.log" 2>&1
  echo "[$tag 2 GPUs] exit $? after $((SECONDS - s)) s"; s=$SECONDS
  # The noise seeds (NOISE_SEEDS, default "1") train two at a time, one per GPU, each with half
  # the cores; their losses are the yardstick, their speed is not measured.
  local noise=() i=0
  for seed in ${NOISE_SEEDS:-1}; do
    CUDA_VISIBLE_DEVICES=$((i % 2)) timeout "$limit" python -m uvlm.train.cli "${args[@]}" --seed "$seed" \
      --set train.threads=$(( $(nproc) / 2 )) --out "$W/runs/$tag-1gpu-seed$seed" > "$W/$tag-1gpu-seed$seed.log" 2>&1 &
    noise+=("$W/runs/$tag-1gpu-seed$seed"); i=$((i + 1))
    (( i % 2 == 0 )) && wait
  done
  wait
  echo "[$tag 1 GPU, seeds ${NOISE_SEEDS:-1}] done after $((SECONDS - s)) s"
  python -m uvlm.train.ddp_check "$W/runs/$tag-1gpu" "$W/runs/$tag-2gpu" --noise "${noise[@]}" \
    --device "$GPU" --out "$OUT/ddp-$SLUG-$tag"
}
# threads: d384 on both GPUs with every core's thread pool in each process (train.threads=0
# used to mean that under a launch; now each process takes its share), against d384's 1-GPU run.
threads() {
  local s=$SECONDS
  timeout 100 "${TWO_GPUS[@]}" --params "$W/params.yaml" --run "$RUN" --seed 0 --no-progress \
    --set train.threads="$(nproc)" --out "$W/runs/d384-2gpu-allcores" > "$W/d384-2gpu-allcores.log" 2>&1
  echo "[d384 2 GPUs, $(nproc) threads each] exit $? after $((SECONDS - s)) s"
  python -m uvlm.train.ddp_check "$W/runs/d384-1gpu" "$W/runs/d384-2gpu-allcores" --device "$GPU" \
    --out "$OUT/ddp-$SLUG-d384-allcores"
}
# notebook: the training notebook itself through papermill with train.num_processes=2, so that
# it starts accelerate.notebook_launcher (uvlm.train.loop.launch_run), checked against d384's 1-GPU run.
notebook() {
  sed 's/^train: {/train: {num_processes: 2, seeds: [0], /' "$W/params.yaml" > "$W/params_notebook.yaml"
  local s=$SECONDS
  timeout 150 papermill --log-output --no-progress-bar --cwd "$W" notebooks/04_train.ipynb \
    "$W/04_train_notebook_launcher.ipynb" -p params_path params_notebook.yaml -p run "$RUN" > "$W/notebook.log" 2>&1
  echo "[notebook_launcher, 2 GPUs] exit $? after $((SECONDS - s)) s; mean step $(mean_step_ms "$W/data/runs/$RUN/seed0") ms"
  python -m uvlm.train.ddp_check "$W/runs/d384-1gpu" "$W/data/runs/$RUN/seed0" --noise "$W/runs/d384-1gpu-seed1" \
    --device "$GPU" --out "$OUT/ddp-$SLUG-notebook"
}
mean_step_ms() {  # RUN_DIR: the mean training step of a finished run, from its summary
  python -c "import json, sys; print(round(1e3 * json.load(open(sys.argv[1]))['mean_step_time_s'], 1))" \
    "$1/train_summary.json" 2>/dev/null || echo "?"
}
# launcher [THREADS]: the same uvlm.train.loop.launch_run (accelerate.notebook_launcher, forked processes)
# from a plain python process instead of a Jupyter kernel, which tells the launcher's cost from the
# kernel's; THREADS sets train.threads in the forked processes (default: their share of the cores).
launcher() {
  local threads=${1:-} tag=launcher${1:+-threads$1}
  rm -rf "$W/data_$tag/runs"  # a repeat trains afresh instead of finding the last one's checkpoint
  mkdir -p "$W/data_$tag"
  ln -sfn "$W/data/world" "$W/data_$tag/world" && ln -sfn "$W/data/tokenizer" "$W/data_$tag/tokenizer"
  sed "s/^train: {/paths: {data: data_$tag}\ntrain: {num_processes: 2, seeds: [0], ${threads:+threads: $threads, }/" \
    "$W/params.yaml" > "$W/params_$tag.yaml"
  local s=$SECONDS
  timeout 150 python -c "import sys; from uvlm.core.config import load_config; from uvlm.train.loop import launch_run
launch_run(load_config(sys.argv[1]), sys.argv[2], 0)" "$W/params_$tag.yaml" "$RUN" > "$W/$tag.log" 2>&1
  echo "[notebook_launcher from python, 2 GPUs${threads:+, $threads threads each}] exit $? after $((SECONDS - s)) s;" \
    "mean step $(mean_step_ms "$W/data_$tag/runs/$RUN/seed0") ms"
  [ -d "$W/runs/d384-1gpu" ] && python -m uvlm.train.ddp_check "$W/runs/d384-1gpu" "$W/data_$tag/runs/$RUN/seed0" \
    --noise "$W/runs/d384-1gpu-seed1" --device "$GPU" --out "$OUT/ddp-$SLUG-$tag"
}
# The gpu preset's model (~22M params, batch 64), then ~86M and ~207M params at batch 128: more
# work per kernel launch, so the second GPU is less hidden behind host overhead.
D768=(--set train.batch_size=128 --set model.d_model=768 --set model.n_heads=12 --set model.n_kv_heads=12
      --set model.ffn_hidden=2048)
D1024=(--set train.batch_size=128 --set model.d_model=1024 --set model.n_layers=16 --set model.n_heads=16
       --set model.n_kv_heads=16 --set model.ffn_hidden=2816)
one() {
  case $1 in
    d384) pair d384 100 ;;
    threads) threads ;;  # needs d384 first
    notebook) notebook ;;  # needs d384 first
    launcher) launcher ;;  # the check against d384's runs needs d384 first; the step time does not
    launcher[0-9]*) launcher "${1#launcher}" ;;  # the same with N CPU threads per forked process
    d768) pair d768 110 "${D768[@]}" ;;
    d1024) pair d1024 150 "${D1024[@]}" ;;
    *) echo "unknown check '$1': one of d384 threads notebook launcher launcherN d768 d1024"; return 2 ;;
  esac
}
if (( $# )); then names=("$@"); else names=(d384 threads notebook d768 d1024); fi
for name in "${names[@]}"; do one "$name"; done
(cd "$W" && tar czf "$OUT/ddp-logs.tgz" --exclude='*.safetensors' ./*.log ./*.ipynb runs data/runs data_launcher*/runs params*.yaml)
