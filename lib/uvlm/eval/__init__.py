"""Evaluation of a trained run: the benchmark analogues, generation metrics, FID and the metric arithmetic behind them; stage ``eval``."""
