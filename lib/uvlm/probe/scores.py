"""Scores computed by reading images with the attribute probe.

- :func:`attribute_agreement`: two image sets (e.g. originals and their VQ
  reconstructions) read the same, cell by cell.
- :func:`prompt_attribute_accuracy`: a generated image contains every object its
  prompt names, with the named attributes (GenEval-like).
"""
from __future__ import annotations

import numpy as np

from uvlm.world.language import parse_prompt
from uvlm.world.scenes import WorldConfig


def attribute_agreement(probe, imgs_a: np.ndarray, imgs_b: np.ndarray) -> float:
    """Fraction of cells, among those read as occupied in either image, read identically.

    Empty-in-both cells are left out: counting them would reward blank images.
    """
    if len(imgs_a) != len(imgs_b):
        raise ValueError(f"attribute_agreement needs equal-length image sets, got "
                         f"{len(imgs_a)} and {len(imgs_b)}")
    pa, pb = probe.predict_cells(imgs_a), probe.predict_cells(imgs_b)
    occ_a, occ_b = pa["occupied"] == 1, pb["occupied"] == 1
    relevant = occ_a | occ_b
    if not relevant.any():
        return 1.0
    same = (occ_a == occ_b) & (pa["shape"] == pb["shape"]) & (pa["colour"] == pb["colour"]) \
        & (pa["size"] == pb["size"])
    return float(same[relevant].mean())


def _world_cfg(probe) -> WorldConfig:
    m = probe.meta
    return WorldConfig(image_size=m["image_size"], grid=m["grid"], shapes=list(m["shapes"]),
                       colours=list(m["colours"]), sizes=list(m["sizes"]))


def _mentions(item, cfg: WorldConfig) -> list[dict]:
    """Named objects of a prompt string, a G record, or a scene (fully specified)."""
    if isinstance(item, str):
        return parse_prompt(item, cfg)
    if "prompt" in item:
        return parse_prompt(item["prompt"], cfg)
    scene = item.get("scene", item)
    return [{"colour": o["colour"], "shape": o["shape"], "size": o["size"],
             "cell": tuple(o["cell"])} for o in scene["objects"]]


def _matches(m: dict, obj: tuple, use_size: bool) -> bool:
    cell, shape, colour, size = obj
    return (m["shape"] == shape and m["colour"] == colour
            and (m["cell"] is None or tuple(m["cell"]) == cell)
            and (not use_size or m["size"] is None or m["size"] == size))


def prompt_attribute_report(probe, images: np.ndarray, scenes_or_prompts,
                            use_size: bool = True) -> dict:
    """Object- and image-level accuracy of generated images against their prompts.

    Each named object must be found (colour + shape, and the position and size when
    the prompt names them) among the probe's reading; each found object is used once.
    """
    if len(images) != len(scenes_or_prompts):
        raise ValueError(f"{len(images)} images but {len(scenes_or_prompts)} prompts")
    cfg = _world_cfg(probe)
    readings = probe.predict_scene(images)
    hits = total = whole = 0
    for item, found in zip(scenes_or_prompts, readings):
        mentions = _mentions(item, cfg)
        # Most specific first, so a vague mention cannot steal a precise one's object.
        mentions.sort(key=lambda m: (m["cell"] is None, m["size"] is None))
        free, ok = list(found), 0
        for m in mentions:
            j = next((j for j, obj in enumerate(free) if _matches(m, obj, use_size)), None)
            if j is not None:
                free.pop(j)
                ok += 1
        hits, total, whole = hits + ok, total + len(mentions), whole + (ok == len(mentions))
    n = max(len(readings), 1)
    return {"object_accuracy": hits / total if total else 1.0, "image_accuracy": whole / n,
            "n_objects": total, "n_images": len(readings)}


def prompt_attribute_accuracy(probe, images: np.ndarray, scenes_or_prompts,
                              use_size: bool = True) -> float:
    """Fraction of prompt-named objects the probe finds in the generated images."""
    return prompt_attribute_report(probe, images, scenes_or_prompts, use_size)["object_accuracy"]
