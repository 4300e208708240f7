"""Layer plans: which mode every decoder layer runs in, per task (docs/method.md §3).

A plan is a list of :class:`LayerMode`, one per layer. The model reads it and nothing else,
so every accelerator and every sharing scheme is a different list, not a different model.

- base: every layer ``full`` with the text projections.
- HiMix (U batches): layers ``< himix.start_layer`` are vanilla ``full``; from there on
  every layer is ``himix``, with image K/V from projection set "img" (share all) or
  "u" (share partial).
- HMGen (G batches): ``hmgen.k`` layers are ``shallow``; all other layers are ``full`` with
  image Q/K/V from set "img" (share all) or "g" (share partial).

HMGen placement. Layers 0 and 1 (the first two) and the last layer are always full; the
"middle" is layers 2 .. L-2.
- ``alternate`` (the paper's scheme): shallow layers at every other layer, S F S F ... S,
  a block of 2K-1 layers centred in the middle (rounded towards the input). Needs
  2K-1 <= L-3. Examples: L=6,K=2 -> {2,4}; L=12,K=3 -> {4,6,8}; L=32,K=3 -> {14,16,18}.
- ``center``: K consecutive shallow layers centred in the middle. Needs K <= L-3.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from uvlm.core.errors import ConfigError
from uvlm.core.schema import rule

TASKS = ("u", "g")
RUN_TASKS = ("u", "g", "ug")
ACCELS = ("base", "himix", "hmgen", "himix+hmgen")
SHARES = ("all", "partial")
MODES = ("full", "himix", "shallow")
FIRST_FULL, LAST_FULL = 2, 1  # layers always kept full at the input and output ends


@dataclass(frozen=True)
class LayerMode:
    mode: str = "full"  # "full" | "himix" | "shallow"
    image_proj: Optional[str] = None  # image projection set, or None for the text projections


@dataclass
class HimixConfig:
    """params.yaml section ``himix``."""

    start_layer: int = field(default=0, metadata=rule(ge=0))


@dataclass
class HmgenConfig:
    """params.yaml section ``hmgen``."""

    k: int = field(default=1, metadata=rule(ge=0))
    placement: str = field(default="alternate", metadata=rule(choices=("alternate", "center")))


def max_shallow_layers(n_layers: int, placement: str = "alternate") -> int:
    middle = max(n_layers - FIRST_FULL - LAST_FULL, 0)
    return (middle + 1) // 2 if placement == "alternate" else middle


def shallow_layers(n_layers: int, k: int, placement: str = "alternate") -> list[int]:
    """Indices of the K shallow layers (see module docstring)."""
    if placement not in ("alternate", "center"):
        raise ConfigError("hmgen.placement", placement, "one of ['alternate', 'center']")
    limit = max_shallow_layers(n_layers, placement)
    if k < 0 or k > limit:
        raise ConfigError("hmgen.k", k, f"0 <= k <= {limit} for {n_layers} layers with placement "
                          f"'{placement}' (layers 0-1 and the last layer stay full)")
    if k == 0:
        return []
    middle = n_layers - FIRST_FULL - LAST_FULL
    span = 2 * k - 1 if placement == "alternate" else k
    start = FIRST_FULL + (middle - span) // 2
    step = 2 if placement == "alternate" else 1
    return [start + step * i for i in range(k)]


def _proj_names(share: str) -> tuple[str, str]:
    """(HiMix set, HMGen set)."""
    return ("img", "img") if share == "all" else ("u", "g")


def _check_run(accel: str, share: str) -> None:
    if accel not in ACCELS:
        raise ConfigError("run.accel", accel, f"one of {list(ACCELS)}")
    if share not in SHARES:
        raise ConfigError("run.share", share, f"one of {list(SHARES)}")
    if share == "partial" and accel != "himix+hmgen":
        raise ConfigError("run.share", share, "'all' unless run.accel is 'himix+hmgen' "
                          "(share partial splits the image projections of the two accelerators)")


def build_plan(task: str, accel: str, n_layers: int, himix_start_layer: int = 0, hmgen_k: int = 1,
               hmgen_placement: str = "alternate", share: str = "all") -> list[LayerMode]:
    """The plan for one batch of ``task`` ("u" or "g") under run accelerator ``accel``.

    Strict: an accelerator of the other task is an error (HiMix for a G batch, HMGen for a
    U batch). For unified runs with one accelerator use :func:`build_plans`.
    """
    if task not in TASKS:
        raise ConfigError("task", task, f"one of {list(TASKS)}")
    if n_layers < 1:
        raise ConfigError("model.n_layers", n_layers, "at least 1")
    _check_run(accel, share)
    himix_set, hmgen_set = _proj_names(share)
    if accel == "base":
        return [LayerMode("full") for _ in range(n_layers)]
    if task == "u":
        if accel == "hmgen":
            raise ConfigError("run.accel", accel, "an accelerator for U batches ('base', 'himix', "
                              "'himix+hmgen'): HMGen keeps image queries for generation only")
        if not 0 <= himix_start_layer < n_layers:
            raise ConfigError("himix.start_layer", himix_start_layer, f"0 <= start_layer < {n_layers}")
        return [LayerMode("full") if i < himix_start_layer else LayerMode("himix", himix_set)
                for i in range(n_layers)]
    if accel == "himix":
        raise ConfigError("run.accel", accel, "an accelerator for G batches ('base', 'hmgen', "
                          "'himix+hmgen'): HiMix drops the image queries that generation predicts from")
    shallow = set(shallow_layers(n_layers, hmgen_k, hmgen_placement))
    return [LayerMode("shallow") if i in shallow else LayerMode("full", hmgen_set) for i in range(n_layers)]


def _applies(task: str, accel: str) -> bool:
    return accel == "himix+hmgen" or (accel == "himix" and task == "u") or (accel == "hmgen" and task == "g")


def build_plans(run_task: str, accel: str, n_layers: int, himix: Optional[HimixConfig] = None,
                hmgen: Optional[HmgenConfig] = None, share: str = "all") -> dict[str, list[LayerMode]]:
    """Plans for every batch task of a run: {"u": plan, "g": plan} (only the run's tasks).

    In a unified run ("ug") an accelerator of one task leaves the other task's batches on
    the base plan. A single-task run whose accelerator does not apply to it is an error.
    """
    if run_task not in RUN_TASKS:
        raise ConfigError("run.task", run_task, f"one of {list(RUN_TASKS)}")
    _check_run(accel, share)
    himix, hmgen = himix or HimixConfig(), hmgen or HmgenConfig()
    tasks = list(run_task)
    if accel != "base" and not any(_applies(t, accel) for t in tasks):
        raise ConfigError("run.accel", accel, f"an accelerator that applies to task '{run_task}'")
    if len(tasks) == 1 and accel == "himix+hmgen":
        raise ConfigError("run.accel", accel, "'himix+hmgen' only for unified runs (run.task 'ug')")
    return {t: build_plan(t, accel if _applies(t, accel) else "base", n_layers, himix.start_layer,
                          hmgen.k, hmgen.placement, share if _applies(t, accel) else "all")
            for t in tasks}


def required_proj_sets(run_task: str, accel: str, share: str = "all") -> list[str]:
    """Image projection sets the model needs for a run: [], ["img"] or ["u", "g"]."""
    if run_task not in RUN_TASKS:
        raise ConfigError("run.task", run_task, f"one of {list(RUN_TASKS)}")
    _check_run(accel, share)
    if accel == "base":
        return []
    return ["u", "g"] if share == "partial" else ["img"]


def plan_proj_sets(plan: list[LayerMode]) -> list[str]:
    """Image projection sets a plan reads, in first-use order."""
    names: list[str] = []
    for m in plan:
        if m.image_proj is not None and m.image_proj not in names:
            names.append(m.image_proj)
    return names


def is_vanilla(plan: Optional[list[LayerMode]]) -> bool:
    return plan is None or all(m.mode == "full" and m.image_proj is None for m in plan)


def validate_plan(plan: list[LayerMode], n_layers: int, proj_sets) -> None:
    """Raise ConfigError for a plan the model cannot run."""
    if len(plan) != n_layers:
        raise ConfigError("plan", f"{len(plan)} layers", f"one LayerMode per layer ({n_layers})")
    himix_seen = False
    for i, m in enumerate(plan):
        if m.mode not in MODES:
            raise ConfigError(f"plan[{i}].mode", m.mode, f"one of {list(MODES)}")
        if m.mode == "himix":
            himix_seen = True
        elif himix_seen:
            raise ConfigError(f"plan[{i}].mode", m.mode, "'himix' (once HiMix starts, image hidden "
                              "states are gone, so every later layer must be HiMix too)")
        if m.mode == "shallow" and m.image_proj is not None:
            raise ConfigError(f"plan[{i}].image_proj", m.image_proj, "None for a shallow layer")
        if m.image_proj is not None and m.image_proj not in proj_sets:
            raise ConfigError("model.image_proj_sets", list(proj_sets),
                              f"a list containing '{m.image_proj}' (used by plan[{i}]); "
                              f"call model.add_image_projections('{m.image_proj}')")


def describe_plan(plan: list[LayerMode]) -> str:
    """One line per (mode, projection set) with the layer indices, e.g. for a notebook."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(plan):
        groups.setdefault((m.mode, m.image_proj), []).append(i)
    lines = []
    for (mode, proj), layers in groups.items():
        what = {"full": "image Q/K/V", "himix": "image K/V"}.get(mode)
        src = f"from set '{proj}'" if proj else "from the text projections"
        extra = f" ({what} {src})" if what and (proj or mode == "himix") else ""
        if mode == "shallow":
            extra = " (image tokens skip; text attends to text only)"
        lines.append(f"{mode:8s} layers {layers}{extra}")
    return "\n".join(lines)


def check_run(spec, n_layers: int, himix: HimixConfig, hmgen: HmgenConfig, prefix: str = "run") -> None:
    """Config-time check of one run of the grid (``spec``: task, accel, share, and optional
    hmgen_k / himix_start_layer overrides); errors name the key under ``prefix``."""
    import dataclasses

    fraction = getattr(spec, "hmgen_fraction", None)
    rename = {"run.accel": f"{prefix}.accel", "run.share": f"{prefix}.share", "run.task": f"{prefix}.task"}
    if getattr(spec, "himix_start_layer", None) is not None:
        himix = dataclasses.replace(himix, start_layer=spec.himix_start_layer)
        rename["himix.start_layer"] = f"{prefix}.himix_start_layer"
    # The same precedence as run_setup.accel_settings: a fraction wins over hmgen_k. An error is
    # reported on the key the user set, never on hmgen.k, which the run does not read then.
    if fraction is not None:
        hmgen = dataclasses.replace(hmgen, k=hmgen_k_of(fraction, n_layers))
    elif getattr(spec, "hmgen_k", None) is not None:
        hmgen = dataclasses.replace(hmgen, k=spec.hmgen_k)
        rename["hmgen.k"] = f"{prefix}.hmgen_k"
    try:
        build_plans(spec.task, spec.accel, n_layers, himix, hmgen, spec.share)
    except ConfigError as e:
        if e.key == "hmgen.k" and fraction is not None:
            limit = max_shallow_layers(n_layers, hmgen.placement)
            raise ConfigError(f"{prefix}.hmgen_fraction", fraction,
                              f"a fraction whose K = max(1, round(fraction x model.n_layers={n_layers})) is at most "
                              f"{limit} (it gives K = {hmgen.k}; layers 0-1 and the last stay full), "
                              f"i.e. below {(limit + 0.5) / n_layers:.3g}") from None
        if e.key in rename:
            raise ConfigError(rename[e.key], e.value, e.allowed) from None
        raise


def hmgen_k_of(fraction: float, n_layers: int) -> int:
    """HMGen's K from a run's ``hmgen_fraction``: a share of depth, at least one layer."""
    return max(1, round(fraction * n_layers))
