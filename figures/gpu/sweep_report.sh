#!/usr/bin/env bash
# Redraw figures/gpu/sweep (tables, figures, verdict) from the committed job results; no GPU.
#   bash figures/gpu/sweep_report.sh
# The jobs ran on one NVIDIA H200 before results recorded their device's name, hence the label.
set -euo pipefail
here=$(cd "$(dirname "$0")/sweep" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/data/sweep"
ln -s "$here/jobs" "$tmp/data/sweep/jobs"
printf 'preset: gpu\npaths:\n  data: %s\n  figures: %s\n' "$tmp/data" "$tmp/figures" > "$tmp/params.yaml"
python -m uvlm.sweep --params "$tmp/params.yaml" --report --device-label "NVIDIA H200" > /dev/null
cp "$tmp"/figures/sweep/* "$here/"
cp "$tmp/figures/metrics/sweep.json" "$here/sweep.json"
echo "wrote $(ls "$tmp/figures/sweep" | wc -l) files and sweep.json to $here"
