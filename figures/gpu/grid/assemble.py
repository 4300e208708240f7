"""Tables 1-3, the claim verdicts and the efficiency / synergy / layer-plan figures of the gpu grid,
from what the GPU calls brought back: the results notebook (06) without Fig. 5, which needs the
trained checkpoints (they stay on the GPU machine).

    cd WORKDIR && PYTHONPATH=<repo>/lib python <repo>/figures/gpu/grid/assemble.py

WORKDIR holds a params.yaml (preset: gpu, `runs:` listing the runs that finished), data/world
and data/tokenizer of the gpu preset, data/runs/RUN/seedS/train_summary.json and
figures/metrics/RUN.json plus figures/metrics/attention.json as the stages wrote them.
"""
from uvlm import claims as C, results as R, results_figures as F, tables as T
from uvlm.config import load_config

cfg = load_config("params.yaml")
figs = cfg.paths.figures
res = R.collect(cfg)
print(R.info_frame(res).to_string())
tables = T.build_tables(res.stats, res.info)
for table in tables.values():
    T.write_table(table, figs / "tables")
    print(T.to_markdown(table), end="\n\n")
eff = R.efficiency_frame(res)
F.plot_efficiency(eff, figs / "fig_efficiency.png")
print(eff.to_string())
F.plot_synergy(R.synergy_frame(res), figs / "fig_synergy.png")
F.plot_layer_plans(R.layer_plans(cfg), figs / "fig_layer_plans.png", {r: i["label"] for r, i in res.info.items()})
claims = C.decide_claims(res, R.read_attention(cfg))
C.write_claims(cfg, claims)
R.write_results_json(cfg, res, claims, {})
print((figs / "claims.md").read_text())
