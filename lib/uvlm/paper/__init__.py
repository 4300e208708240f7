"""The paper's results: one tidy table of every run, the verdict on each claim, Tables 1-3, Figures, headline metrics, and rescoring of archived records."""
