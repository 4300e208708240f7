#!/usr/bin/env bash
# Redraw this folder's tables, figures and verdict from the committed job results (no training).
#   bash figures/sweeps/synergy_cpu/report.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/data/sweep"
ln -s "$here/jobs" "$tmp/data/sweep/jobs"
{ grep -v '^preset\|^paths' "$here/params.yaml"; printf 'preset: cpu\npaths:\n  data: %s\n  figures: %s\n' "$tmp/data" "$tmp/figures"; } > "$tmp/params.yaml"
python -m uvlm.sweep --params "$tmp/params.yaml" --report --device-label "Intel Xeon CPU, 2 cores" > /dev/null
cp "$tmp"/figures/sweep/* "$here/"
cp "$tmp/figures/metrics/sweep.json" "$here/sweep.json"
echo "wrote $(ls "$tmp/figures/sweep" | wc -l) files and sweep.json to $here"
