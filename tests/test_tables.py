"""Table rendering: Markdown with the paper beside ours, CSV that parses back, LaTeX, mean ± std."""
import csv
import io

from uvlm.paper import tables as T

RUNS = {
    "u_base": {"label": "Baseline (U-only)", "task": "u", "flops_rel": 1.0},
    "g_base": {"label": "Baseline (G-only)", "task": "g", "flops_rel": 1.0, "hmgen_k": None},
    "u_himix": {"label": "HiMix (U-only)", "task": "u", "flops_rel": 0.4213},
    "g_hmgen_k3": {"label": "HMGen K=1 (G-only)", "task": "g", "flops_rel": 0.9, "hmgen_k": 1,
                   "shallow_layers": [3]},
    "ug_base": {"label": "Baseline (Unified)", "task": "ug", "flops_rel": 1.0},
}


def summary():
    """{(run, subset, metric): (mean, std, n)} as uvlm.paper.results.lookup gives it; three seeds."""
    out = {}
    for run, base in (("u_base", 50.0), ("u_himix", 45.0), ("ug_base", 55.0)):
        for subset, shift in (("in_dist", 0.0), ("transfer", -10.0)):
            for metric in ("GQA", "POPE-A", "POPE-P", "POPE-R", "POPE-F1", "SEED"):
                out[(run, subset, metric)] = (base + shift, 1.234, 3)
            out[(run, subset, "MME-P")] = (300.0 + shift, 10.0, 3)
            out[(run, subset, "MME-C")] = (120.0, 5.0, 3)
    for run, fd in (("g_base", 4.0), ("g_hmgen_k3", 3.5), ("ug_base", 3.0)):
        for subset in ("in_dist", "transfer"):
            out[(run, subset, "FID")] = (fd, 0.1, 3)
            out[(run, subset, "Attr-Acc")] = (70.0, 2.0, 3)
            out[(run, subset, "G-NLL")] = (2.5, 0.01, 3)
    for run in RUNS:
        out[(run, "all", "train_time_s")] = (100.0, 4.0, 3)
        out[(run, "all", "time_rel")] = (0.8 if "base" not in run else 1.0, 0.05, 3)
    return out


def test_cell_formats_mean_std_and_single_values():
    assert T.Cell(52.864, 1.2, 3).text() == "52.86 ± 1.20"
    assert T.Cell(52.864, None, 1).text() == "52.86"
    assert T.Cell(52.864, 1.2, 1).text() == "52.86"  # one seed: no spread to show
    assert T.Cell(None).text() == T.MISSING
    assert T.Cell(0.4213, None, 1, 2, "x").text() == "0.42x"
    assert T.Cell(1.0, 0.05, 3, 2, "x").text(pm="+-") == "1.00x +- 0.05"


def test_markdown_has_both_subsets_and_the_paper_apart():
    t = T.build_tables(summary(), RUNS)["table1"]
    md = T.to_markdown(t)
    ours, paper = md.split("**paper**")
    assert "GQA-a" in ours and "50.00 ± 1.23" in ours and "40.00 ± 1.23" in ours
    assert "| in-dist |" in ours and "| transfer |" in ours
    assert "0.42x" in ours and "0.80x ± 0.05" in ours
    assert "52.86" not in ours  # the paper's numbers never enter our table
    assert "paper: VILA-U (U-only)" in paper and "52.86" in paper and "0.24x" in paper
    assert [r["Method"] for r in t.rows] == ["Baseline (U-only)", "HiMix (U-only)"] * 2


def test_csv_parses_back_to_the_numbers():
    t = T.build_tables(summary(), RUNS)["table3"]
    rows = list(csv.DictReader(io.StringIO(T.to_csv(t))))
    assert len(rows) == 2 * len(RUNS)
    first = rows[0]
    assert first["Method"] == "Baseline (U-only)" and first["Subset"] == "in-dist" and first["n"] == "3"
    assert float(first["GQA-a"]) == 50.0 and float(first["GQA-a std"]) == 1.234
    assert first["FID-a"] == "" and float(first["FLOPs"]) == 1.0
    g = next(r for r in rows if r["Method"] == "HMGen K=1 (G-only)" and r["Subset"] == "transfer")
    assert float(g["FID-a"]) == 3.5 and g["GQA-a"] == ""


def test_table2_states_the_k_used():
    t = T.build_tables(summary(), RUNS)["table2"]
    hm = [r for r in t.rows if r["Method"].startswith("HMGen")][0]
    assert hm["K"] == "1" and hm["shallow layers"] == "[3]"
    assert "MJHQ-30K FID" in T.to_markdown(t)


def test_latex_looks_compilable():
    t = T.build_tables(summary(), RUNS)["table3"]
    tex = T.to_latex(t)
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex and r"\end{table}" in tex
    assert r"$\pm$" in tex and "±" not in tex
    body = tex.split(r"\hline")[2]
    assert all(line.count("&") == len(t.columns) - 1 for line in body.strip().splitlines())
    assert T.tex_escape("50% of a_b & c") == r"50\% of a\_b \& c"


def test_write_table_writes_three_files(tmp_path):
    t = T.build_tables(summary(), RUNS)["table2"]
    paths = T.write_table(t, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["table2.csv", "table2.md", "table2.tex"]
    assert all(p.read_text() for p in paths.values())
