from uvlm.core.config import load_config
from uvlm.train.hparam_sweep import best_point, sweep_points, to_markdown, width_overrides


def _row(run, lr, d, loss):
    return {"run": run, "lr": lr, "d_model": d, "best_val_loss": loss, "best_step": 10, "steps": 10, "wall_s": 1.0}


def test_best_point_puts_tasks_on_one_scale():
    rows = [_row("u_base", 1e-3, 128, 0.385), _row("g_base", 1e-3, 128, 3.317),
            _row("u_base", 2e-3, 128, 0.409), _row("g_base", 2e-3, 128, 3.300),
            _row("u_base", 4e-3, 128, 0.471), _row("g_base", 4e-3, 128, 3.280)]
    # relative means: 1e-3 -> (1 + 3.317/3.280) / 2 = 1.0056; 2e-3 -> 1.034; 4e-3 -> 1.112
    assert best_point(rows) == (1e-3, 128)
    assert "lr 0.001, width 128" in to_markdown({"preset": "cpu", "seed": 0, "preset_lr": 2e-3,
                                                  "preset_width": 128, "rows": rows})


def test_incomplete_points_are_not_chosen():
    rows = [_row("u_base", 1e-3, 128, 0.1), _row("u_base", 2e-3, 128, 0.2), _row("g_base", 2e-3, 128, 3.0)]
    assert best_point(rows) == (2e-3, 128)


def test_width_keeps_head_size_and_ffn_ratio(tmp_path):
    cfg = load_config(str(_params(tmp_path)))
    o = width_overrides(192, cfg.model)
    assert o["d_model"] // o["n_heads"] == cfg.model.d_model // cfg.model.n_heads
    assert abs(o["ffn_hidden"] / 192 - cfg.model.ffn_hidden / cfg.model.d_model) < 0.1
    points = sweep_points(cfg, [4e-3, cfg.train.lr], [cfg.model.d_model, 192])
    assert len(points) == 3  # the preset point appears once


def _params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("preset: cpu\n")
    return p
