#!/usr/bin/env bash
# Lay out a record folder (as records/gpu/grid/) from what pipeline.sh brought back:
#   bash scripts/gpu/record.sh PIPELINE_TGZ DEST [LOG ...]
# DEST gets params.yaml (the file that ran), the scores (metrics/), each seed's train_summary.json
# and val_log.csv (runs/), the tables, claims and figures, and the LOGs under logs/; then
# `python -m uvlm.paper.rescore DEST` derives the tables and claims with the current results code.
# Run from the repository root with uvlm importable. DEST is replaced.
set -eu
[ $# -ge 2 ] || { echo "usage: bash scripts/gpu/record.sh PIPELINE_TGZ DEST [LOG ...]"; exit 2; }
tgz=$1 dest=$2; shift 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar xzf "$tgz" -C "$tmp"
[ -f "$tmp/params.yaml" ] || { echo "$tgz holds no params.yaml: pack it with scripts/gpu/pipeline.sh"; exit 2; }
rm -rf "$dest" && mkdir -p "$dest/logs"
cp "$tmp/params.yaml" "$tmp/figures/claims.md" "$tmp"/figures/*.png "$dest/"
cp -r "$tmp/figures/tables" "$tmp/figures/metrics" "$tmp/figures/curves" "$dest/"
rm -f "$dest/metrics/sweep.json" "$dest/metrics/text_prior.json"  # stages that are off at the preset
# The archive also holds the committed files of runs this grid did not have (KEEP_RUNS): keep only
# the scores and curves of the record's own runs and of the stages.
runs=" $(python -c 'import sys, yaml; print(" ".join(yaml.safe_load(open(sys.argv[1]))["runs"]))' "$dest/params.yaml") "
for f in "$dest"/metrics/*.json "$dest"/curves/*.png; do
  stem=$(basename "${f%.*}")
  case " attention fig5 probe results tokenizer world " in *" $stem "*) continue ;; esac
  [[ $runs == *" $stem "* ]] || rm "$f"
done
(cd "$tmp/data" && find runs -name train_summary.json -o -name val_log.csv) | while read -r f; do
  mkdir -p "$dest/$(dirname "$f")" && cp "$tmp/data/$f" "$dest/$f"
done
for log in "$@"; do cp "$log" "$dest/logs/"; done
python -m uvlm.paper.rescore "$dest"
