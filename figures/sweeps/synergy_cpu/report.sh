#!/usr/bin/env bash
# Redraw this folder's tables, figures and verdict from the committed job results (no training).
#   bash figures/sweeps/synergy_cpu/report.sh
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../../gpu/sweep_report.sh" "$here" cpu "Intel Xeon CPU, 2 cores"
