"""The paper's Tables 1-3 rebuilt from our numbers, rendered as Markdown, CSV and LaTeX.

Nothing is computed here beyond picking values and formatting them. The inputs are

* ``summary``: ``{(run, subset, metric): (mean, std, n)}`` over seeds, from
  :func:`uvlm.paper.results.summarise` (``std`` is None with a single seed);
* ``runs``: ``{run: info}`` in grid order, from :func:`uvlm.paper.results.run_info`
  (label, task, K, plan FLOPs relative to the run's baseline).

Every benchmark cell is given for the in-distribution and the transfer items, as two
row groups. The Markdown version adds the paper's own values (hard-coded below, from
docs/method.md §4) in a separate table labelled "paper": they are never mixed into ours.

The writers are hand-written, not pandas/tabulate: they emit the committed tables' exact bytes
(an unpadded Markdown grid, a ``<col> std`` CSV column per number, a plain ``tabular`` with a rule
between row groups), which neither library reproduces.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

SUBSET_LABELS = {"in_dist": "in-dist", "transfer": "transfer"}
# (our column header, metric key in the summary, digits). "-a" marks an analogue.
U_COLUMNS = [("GQA-a", "GQA", 2), ("MME-C-a", "MME-C", 1), ("MME-P-a", "MME-P", 1),
             ("POPE-A-a", "POPE-A", 2), ("POPE-P-a", "POPE-P", 2), ("POPE-R-a", "POPE-R", 2),
             ("POPE-F1-a", "POPE-F1", 2), ("POPE-Acc-a", "POPE-Acc", 2), ("POPE yes %", "POPE-Yes", 1),
             ("SEED-a", "SEED", 2), ("U-NLL", "U-NLL", 3)]
G_COLUMNS = [("FID-a", "FID", 3), ("FID floor", "FID-floor", 3), ("Attr-Acc-a", "Attr-Acc", 2),
             ("G-NLL", "G-NLL", 3)]
MISSING = "—"

# The paper's values (docs/method.md §4 and the paper; real benchmarks, 7B scale). Reference only.
PAPER_U = ("GQA", "MME-C", "MME-P", "POPE-A", "POPE-P", "POPE-R", "POPE-F1", "SEED-Img")
PAPER = {
    "table1": {"columns": [*PAPER_U, "FLOPs"], "rows": [
        ("VILA-U (U-only)", [52.86, 258.21, 1054.88, 81.30, 84.67, 74.76, 79.40, 46.05, "1x"]),
        ("HiMix (U-only)", [49.92, 224.64, 983.30, 78.56, 78.03, 79.49, 78.75, 40.88, "0.24x"])]},
    "table2": {"columns": ["shallow layers K", "MJHQ-30K FID", "FLOPs"], "rows": [
        ("VILA-U (G-only)", [0, 17.45, "1x"]), ("HMGen", [3, 12.16, "0.85x"]),
        ("HMGen", [5, 12.55, "0.75x"])]},
    "table3": {"columns": [*PAPER_U, "MJHQ-30K FID", "FLOPs"], "rows": [
        ("VILA-U (U-only)", [52.86, 258.21, 1054.88, 81.30, 84.67, 74.76, 79.40, 46.05, None, "1x"]),
        ("VILA-U (G-only)", [None] * 8 + [17.45, "1x"]),
        ("VILA-U (Unified)", [56.00, 250.00, 1135.91, 83.37, 87.95, 77.33, 82.30, 47.88, 15.78, "1x"]),
        ("HiMix (U-only)", [49.92, 224.64, 983.30, 78.56, 78.03, 79.49, 78.75, 40.88, None, "0.24x"]),
        ("HMGen K=3 (G-only)", [None] * 8 + [12.16, "0.85x"]),
        ("HiMix-HMGen (Share All)", [33.00, 233.21, 662.26, 60.84, 57.66, 81.64, 67.59, 31.38, 12.53, "0.56x"]),
        ("HiMix-HMGen (Share Partial)", [47.05, 255.00, 847.82, 76.43, 76.10, 77.10, 76.58, 34.50, 14.54,
                                         "0.55x"])]},
}


@dataclass
class Cell:
    """One number over seeds: mean, sample std (None with one seed) and n."""
    mean: float | None
    std: float | None = None
    n: int = 0
    digits: int = 2
    unit: str = ""

    def text(self, pm: str = "±") -> str:
        if self.mean is None or (isinstance(self.mean, float) and math.isnan(self.mean)):
            return MISSING
        out = f"{self.mean:.{self.digits}f}{self.unit}"
        if self.std is not None and self.n >= 2:
            out += f" {pm} {self.std:.{self.digits}f}"
        return out


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[dict]  # column -> str | Cell
    notes: list[str] = field(default_factory=list)

    def value(self, row: int, column: str):
        return self.rows[row].get(column, MISSING)


def fmt(value, pm: str = "±") -> str:
    if isinstance(value, Cell):
        return value.text(pm)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return str(value)


# ============================================================== rendering

def to_markdown(table: Table, paper: bool = True) -> str:
    lines = [f"### {table.title}", "", _md_grid(table.columns, [[fmt(r.get(c)) for c in table.columns]
                                                                 for r in table.rows])]
    if table.notes:
        lines += [""] + [f"- {n}" for n in table.notes]
    ref = PAPER.get(table.name) if paper else None
    if ref:
        cols = ["paper: method", *ref["columns"]]
        rows = [[f"paper: {label}", *[fmt(v) for v in vals]] for label, vals in ref["rows"]]
        lines += ["", "**paper** (Chen et al. 2026; real benchmarks, 7B model): reference values, not "
                  "comparable in absolute terms to the analogues above; compare the direction and size "
                  "of effects.", "", _md_grid(cols, rows)]
    return "\n".join(lines) + "\n"


def _md_grid(columns, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    out = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def to_csv(table: Table) -> str:
    """Machine-readable: every number column as ``<col>`` (mean) and ``<col> std``; n per row."""
    header = []
    for c in table.columns:
        header.append(c)
        if any(isinstance(r.get(c), Cell) for r in table.rows):
            header.append(f"{c} std")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in table.rows:
        out = []
        for c in table.columns:
            v = r.get(c)
            has_std = f"{c} std" in header
            if isinstance(v, Cell):
                out.append("" if v.mean is None else repr(float(v.mean)))
                out.append("" if v.std is None else repr(float(v.std)))
            else:
                out.append("" if v is None else str(v))
                if has_std:
                    out.append("")
        w.writerow(out)
    return buf.getvalue()


TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    out = "".join(TEX_SPECIAL.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("—", "--").replace("×", r"$\times$")


def to_latex(table: Table) -> str:
    """A plain ``tabular`` (no package beyond LaTeX itself) inside a ``table`` float."""
    spec = "l" * 2 + "r" * (len(table.columns) - 2)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\hline",
             " & ".join(tex_escape(c) for c in table.columns) + r" \\", r"\hline"]
    group = None
    for r in table.rows:
        g = r.get("Subset")
        if group is not None and g != group:
            lines.append(r"\hline")
        group = g
        lines.append(" & ".join(tex_escape(fmt(r.get(c), "±")) for c in table.columns) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    caption = table.title + (". " + " ".join(table.notes) if table.notes else "")
    lines += [rf"\caption{{{tex_escape(caption)}}}", rf"\label{{tab:{table.name}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: Table, directory) -> dict:
    """``<dir>/<name>.{md,csv,tex}``, each written atomically -> {suffix: path}."""
    from pathlib import Path

    from uvlm.core.io import write_text
    directory = Path(directory)
    out = {}
    for suffix, render in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
        path = directory / f"{table.name}.{suffix}"
        write_text(path, render(table))
        out[suffix] = path
    return out


# ============================================================== assembling the paper's tables

def _cell(summary, run, subset, metric, digits=2, unit=""):
    v = summary.get((run, subset, metric))
    if v is None:
        return Cell(None)
    mean, std, n = v
    return Cell(mean, std, n, digits, unit)


def _seeds(summary, run) -> str:
    ns = [v[2] for (r, _, _), v in summary.items() if r == run and v is not None]
    return str(max(ns)) if ns else "0"


def _efficiency(summary, runs, run) -> dict:
    info = runs[run]
    rel = info.get("flops_rel")
    return {"FLOPs": Cell(rel, None, 1, 2, "x"),
            "Time (s)": _cell(summary, run, "all", "train_time_s", 1),
            "Time rel": _cell(summary, run, "all", "time_rel", 2, "x")}


def _rows(summary, runs, names, columns, extra=None) -> list[dict]:
    rows = []
    for subset, sub_label in SUBSET_LABELS.items():
        for run in names:
            row = {"Method": runs[run]["label"], "Subset": sub_label, "n": _seeds(summary, run),
                   "Best at cap": runs[run].get("best_at_cap", "unknown")}
            row.update(extra(run) if extra else {})
            for head, metric, digits in columns:
                row[head] = _cell(summary, run, subset, metric, digits)
            row.update(_efficiency(summary, runs, run))
            rows.append(row)
    return rows


COMMON_NOTES = [
    "Our numbers are analogues (suffix -a) on the scene world, not the paper's benchmarks.",
    "Cells are mean ± std (sample std) over n seeds; with n = 1 a single value.",
    "Each row group is one subset: in-dist items, or transfer items ((colour, shape) combos this task "
    "never saw in training).",
    "FLOPs: counted FLOPs per training sample of the run's layer plans (forward + backward), relative to "
    "its baseline (U-only runs vs the U-only baseline, G-only vs G-only, unified vs unified).",
    "Time: measured training time (sum of step times, s) and its ratio to the baseline at the same seed.",
    "Best at cap: the seeds (and task) whose best checkpoint comes from the last evaluation before the "
    "step cap (best step > cap - eval_every), so that the cap, not convergence, may have chosen it; "
    "unknown: the training summary predates the record of the cap.",
]
POPE_NOTE = ("POPE-Acc-a: accuracy over all POPE items (mean of the samplings); POPE yes %: share of "
             "\"yes\" answers (the items are half \"yes\": near 0 or 100 is a constant answer, whose F1 "
             "says little).")
U_NLL_NOTE = "U-NLL: teacher-forced NLL of the answers of every U test item (nats / answer token, lower is better)."


def table1(summary, runs) -> Table:
    names = [r for r, i in runs.items() if i["task"] == "u"]
    cols = ["Method", "Subset", "n", "Best at cap"] + [h for h, _, _ in U_COLUMNS] + ["FLOPs", "Time (s)", "Time rel"]
    return Table("table1", "Table 1: understanding only (U-only), baseline vs HiMix", cols,
                 _rows(summary, runs, names, U_COLUMNS), [*COMMON_NOTES, U_NLL_NOTE, POPE_NOTE])


def table2(summary, runs) -> Table:
    names = [r for r, i in runs.items() if i["task"] == "g"]
    cols = (["Method", "Subset", "n", "Best at cap", "K", "shallow layers"] + [h for h, _, _ in G_COLUMNS]
            + ["FLOPs", "Time (s)", "Time rel"])

    def plan(run):
        i = runs[run]
        return {"K": str(i.get("hmgen_k") or 0), "shallow layers": str(i.get("shallow_layers") or [])}
    notes = COMMON_NOTES + [
        "K: shallow layers actually used at this depth (from the run's plan); the runs keep the paper's "
        "K as a fraction of depth.",
        "FID-a: Fréchet distance between generated and real test images in the features of the world's "
        "probe CNN (lower is better); FID floor: the same for VQ reconstructions of the real images.",
        "Attr-Acc-a: share of prompted objects the probe finds with the prompted attributes (%). "
        "G-NLL: teacher-forced NLL of held-out image tokens (nats / token, lower is better)."]
    return Table("table2", "Table 2: generation only (G-only), baseline vs HMGen", cols,
                 _rows(summary, runs, names, G_COLUMNS, plan), notes)


def table3(summary, runs) -> Table:
    g_cols = [c for c in G_COLUMNS if c[1] != "FID-floor"]
    cols = (["Method", "Subset", "n", "Best at cap"] + [h for h, _, _ in U_COLUMNS] + [h for h, _, _ in g_cols]
            + ["FLOPs", "Time (s)", "Time rel"])
    notes = COMMON_NOTES + [U_NLL_NOTE, POPE_NOTE, "U columns are empty for G-only runs and G columns for U-only runs.",
                            "Unified runs are scored with their best U checkpoint on U and their best G "
                            "checkpoint on G."]
    return Table("table3", "Table 3: all runs, isolated and unified training", cols,
                 _rows(summary, runs, list(runs), U_COLUMNS + g_cols), notes)


def build_tables(summary, runs) -> dict[str, Table]:
    return {"table1": table1(summary, runs), "table2": table2(summary, runs), "table3": table3(summary, runs)}
