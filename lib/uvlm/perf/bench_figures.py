"""Rendering of a benchmark result (uvlm.perf.bench): its figure and its markdown table. Drawing only:
every number comes from the result.

Left: per accelerated plan, the measured speedup over its task's baseline beside the
FLOPs-ideal speedup (bars), with the paired-round interquartile range as an error bar.
Right: MFU against the card's bf16 peak on a GPU; on a CPU (no peak), achieved GFLOP/s.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from uvlm.core.plotting import save, style


def _label(row: dict, knob) -> str:
    text = row["run"].replace("_himix_hmgen_", "_").replace("_", " ")
    if row.get("hmgen_k") is not None and row["accel"] != "base":
        text += f" (K={row['hmgen_k']})"
    return text + (f"\n{knob}={row['setting'][knob]}" if knob else "")


def plot_bench(result: dict, path) -> None:
    style()
    knob = result["settings"].get("compare")
    rows = [r for r in result["variants"] if not r["error"]]
    accel = [r for r in rows if r["accel"] != "base" and r["speedup"] is not None]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(accel) + 4.5), 3.6),
                                  gridspec_kw={"width_ratios": [max(len(accel), 1), max(len(rows), 1) * 0.6]})
    x = np.arange(len(accel))
    measured = [r["speedup"] for r in accel]
    ideal = [r["flops_speedup"] for r in accel]
    # The paired-round IQR need not contain the ratio of medians: clip the bars at zero length.
    err = np.array([[max(0.0, r["speedup"] - r["speedup_iqr"][0]), max(0.0, r["speedup_iqr"][1] - r["speedup"])]
                    for r in accel]).T
    ax.bar(x - 0.2, measured, 0.4, yerr=err if len(accel) else None, capsize=2, label="measured", color="tab:blue")
    ax.bar(x + 0.2, ideal, 0.4, label="FLOPs-ideal", color="tab:gray", alpha=0.6)
    for xi, r in zip(x, accel):
        top = max(r["speedup"], r["speedup_iqr"][1])
        ax.text(xi - 0.2, top, f"{r['speedup_efficiency']:.0%}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, [_label(r, knob) for r in accel], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("speedup over the task's baseline")
    ax.set_title("training step: measured vs FLOPs-ideal\n(label: efficiency)", fontsize=9)
    ax.legend(fontsize=7)

    gpu = result["device"]["type"] == "cuda" and any(r["mfu"] is not None for r in rows)
    vals = [(r["mfu"] * 100 if gpu else r["achieved_flops_per_s"] / 1e9) for r in rows]
    colours = ["tab:gray" if r["accel"] == "base" else "tab:blue" for r in rows]
    ax2.bar(np.arange(len(rows)), vals, color=colours)
    ax2.set_xticks(np.arange(len(rows)), [_label(r, knob) for r in rows], rotation=30, ha="right", fontsize=7)
    ax2.set_ylabel("MFU (% of bf16 peak)" if gpu else "achieved GFLOP/s")
    ax2.set_title("MFU" if gpu else "achieved throughput (no peak on CPU)", fontsize=9)
    fig.suptitle(f"{result['device']['name']}, preset {result['settings']['preset']}, "
                 f"batch {result['settings']['batch_size']}", fontsize=9)
    fig.tight_layout()
    save(fig, path)


def _fmt(x, spec: str, scale: float = 1.0) -> str:
    return "-" if x is None else format(x * scale, spec)


def markdown_table(result: dict) -> str:
    """The result as a markdown table, one row per variant, headed by the device and settings."""
    s, d = result["settings"], result["device"]
    knob = s.get("compare")
    head = (f"Training step on **{d['name']}** (torch {d['torch']}, {d['threads']} threads): preset "
            f"`{s['preset']}`, model d{s['model']['d_model']} x {s['model']['n_layers']} layers"
            + (f" ({s['params'] / 1e6:.1f}M params)" if s.get("params") else "")
            + f", batch {s['batch_size']}, {s['image_tokens']} image tokens; median of {s['steps']} "
            + (f"timings of {s['chunk']} steps queued back to back (one sync each, the training loop's "
               "throughput)" if s.get("chunk", 1) > 1 else "steps timed one by one")
            + f" after {s['warmup']} warm-up, all variants interleaved in one process."
            + (f" HiMix attention kernel: `{s['himix']}`." if s.get("himix", "mask") != "mask" and knob != "himix" else ""))
    show_precision = knob != "precision"  # else the knob's column already says it
    cols = (["plan", "K"] + ([knob] if knob else []) + ["precision"] * show_precision + ["step ms", "tokens/s", "GFLOP/step", "speedup",
            "FLOPs-ideal", "efficiency", "MFU", "peak MiB", "act. MiB"] + ([f"{knob} buys"] if knob else []))
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in result["variants"]:
        cells = [r["run"], "-" if r["hmgen_k"] is None or r["accel"] == "base" else str(r["hmgen_k"])]
        cells += [str(r["setting"][knob])] if knob else []
        if r["error"]:
            cells.append("failed: " + r["error"][:80].replace("|", "/"))
            cells += [""] * (len(cols) - len(cells))
        else:
            cells += [r["setting"]["precision"]] * show_precision + [_fmt(r["median_step_s"], ".1f", 1e3), _fmt(r["tokens_per_s"], ",.0f"),
                      _fmt(r["flops_per_step"], ".2f", 1e-9), _fmt(r["speedup"], ".2f"), _fmt(r["flops_speedup"], ".2f"),
                      _fmt(r["speedup_efficiency"], ".0%"), _fmt(r["mfu"], ".1%"),
                      _fmt(r["peak_memory_bytes"], ".0f", 2 ** -20), _fmt(r["saved_activation_bytes"], ".1f", 2 ** -20)]
            cells += [_fmt(r["choice_speedup"], ".2f") + "x"] if knob else []
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "speedup = the task baseline's step time / step time (same setting); FLOPs-ideal = baseline FLOPs / "
              "FLOPs (counted, forward + backward); efficiency = speedup / FLOPs-ideal. A unified (ug) step is one U "
              "step plus one G step. Tokens include padding. act. MiB = tensors autograd saves for backward."]
    if knob:
        lines.append(f"{knob} buys = step time at {knob}={result['settings']['settings_run'][0][knob]} / step time.")
    lines += [f"Note: {n}" for n in result["notes"]]
    if any(r.get("profile") for r in result["variants"]):
        lines += ["", profile_table(result)]
    return "\n".join(lines)


def profile_table(result: dict) -> str:
    """One profiled step per variant: where its time goes (bench.profile_step)."""
    knob = result["settings"].get("compare")
    rows = [r for r in result["variants"] if r.get("profile")]
    kinds = list(next((r["profile"]["by_kind_s"] for r in rows if r["profile"]["by_kind_s"]), {}))
    unit = "GPU" if result["device"]["type"] == "cuda" else "CPU op"
    cols = ["plan"] + ([knob] if knob else []) + ["step ms", f"{unit} busy ms", "busy/step", "kernels"] + \
        [f"{k} ms" for k in kinds]
    lines = [f"Profile of one step per variant ({unit} time per kind of kernel, summed; busy/step well below 1 "
             "means the device waits on the host):", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        p = r["profile"]
        cells = [r["run"]] + ([str(r["setting"][knob])] if knob else [])
        cells += [_fmt(r["median_step_s"], ".2f", 1e3), _fmt(p["busy_s"], ".2f", 1e3), _fmt(p["busy_fraction"], ".2f"),
                  str(p["kernels"])] + [_fmt(p["by_kind_s"].get(k), ".2f", 1e3) for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
