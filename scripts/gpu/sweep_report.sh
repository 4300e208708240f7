#!/usr/bin/env bash
# Redraw a sweep record's tables, figures and verdict from its committed job results; no GPU.
#   bash scripts/gpu/sweep_report.sh                       # records/gpu/sweep, NVIDIA H200
#   bash scripts/gpu/sweep_report.sh DIR PRESET "DEVICE"   # another record (its params.yaml, if any, is used)
# The jobs of the first gpu calls ran before results recorded their device's name, hence the label.
set -euo pipefail
here=$(cd "${1:-$(dirname "$0")/../../records/gpu/sweep}" && pwd)
preset=${2:-gpu}
label=${3:-NVIDIA H200}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/data/sweep"
ln -s "$here/jobs" "$tmp/data/sweep/jobs"
{ [ -f "$here/params.yaml" ] && grep -v '^preset\|^paths' "$here/params.yaml"
  printf 'preset: %s\npaths:\n  data: %s\n  figures: %s\n' "$preset" "$tmp/data" "$tmp/figures"; } > "$tmp/params.yaml"
python -m uvlm.sweep.run --params "$tmp/params.yaml" --report --device-label "$label" > /dev/null
cp "$tmp"/figures/sweep/* "$here/"
cp "$tmp/figures/metrics/sweep.json" "$here/sweep.json"
echo "wrote $(ls "$tmp/figures/sweep" | wc -l) files and sweep.json to $here"
