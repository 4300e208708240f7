#!/usr/bin/env bash
# Redraw records/sweeps/synergy_cpu's tables, figures and verdict from its committed job results
# (no training).
#   bash scripts/sweeps/synergy_cpu_report.sh
scripts=$(cd "$(dirname "$0")/.." && pwd)
exec bash "$scripts/gpu/sweep_report.sh" "$scripts/../records/sweeps/synergy_cpu" cpu "Intel Xeon CPU, 2 cores"
