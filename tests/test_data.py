"""Tokenised splits: the batched fast path gives exactly the row-by-row layout."""
import pytest
import torch

from uvlm.core.config import load_config
from uvlm.core.errors import UVLMError
from uvlm.tokens import segments as S
from uvlm.tokens.sequences import (IGNORE, PAD, encode_g, encode_u, load_text_tokenizer,
                       read_codes, read_records, tokenize_split)
from uvlm.train.setup import vocab_for


def labels_for(ids, seg, loss_on: str):
    """Targets aligned with inputs (the model shifts). Loss on OUTPUT tokens, or all."""
    if loss_on == "all":
        return [t if i > 0 else IGNORE for i, t in enumerate(ids)]
    return [t if s == S.OUTPUT else IGNORE for t, s in zip(ids, seg)]


def reference_rows(task, records, codes, tokenizer, vocab, system_prompt):
    """The layout one example at a time, as data.py documents it, one tokenizer call per text."""
    def ids_of(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    sys_ids = ids_of(system_prompt)
    for rec, grid in zip(records, codes):
        image_ids = [int(c) + vocab.image_token_start for c in grid.reshape(-1)]
        if task == "u":
            yield encode_u(sys_ids, image_ids, ids_of(rec["instruction"]), ids_of(rec["answer"]))
        else:
            yield encode_g(sys_ids, ids_of(rec["prompt"]), image_ids)


@pytest.mark.parametrize("loss_on", ["output", "all"])
@pytest.mark.parametrize("task,split", [("u", "u_train"), ("g", "g_train"), ("u", "u_test")])
def test_tokenize_split_matches_row_by_row(tiny_world, task, split, loss_on):
    cfg = load_config(tiny_world)
    vocab, tokenizer = vocab_for(cfg)
    records = read_records(cfg.paths.data / "world", split)
    codes = read_codes(cfg.paths.data / "tokenizer", split)
    got = tokenize_split(task, records, codes, tokenizer, vocab, cfg.world.system_prompt, loss_on=loss_on)
    rows = list(reference_rows(task, records, codes, tokenizer, vocab, cfg.world.system_prompt))
    assert len(got) == len(rows) == len(records)
    assert got.lengths.tolist() == [len(ids) for ids, _ in rows]
    for i, (ids, seg) in enumerate(rows):
        n = len(ids)
        assert got.input_ids[i, :n].tolist() == ids
        assert got.segment_ids[i, :n].tolist() == seg
        assert got.labels[i, :n].tolist() == labels_for(ids, seg, loss_on)
        assert (got.input_ids[i, n:] == PAD).all() and (got.labels[i, n:] == IGNORE).all()
        assert (got.segment_ids[i, n:] == -1).all()
    assert got.input_ids.dtype == got.labels.dtype == torch.long


def test_uncovered_word_is_named(tiny_world):
    cfg = load_config(tiny_world)
    vocab, tokenizer = vocab_for(cfg)
    records = read_records(cfg.paths.data / "world", "g_val")[:2]
    codes = read_codes(cfg.paths.data / "tokenizer", "g_val")[:2]
    records[1] = dict(records[1], prompt="a zebra")
    with pytest.raises(UVLMError, match="zebra"):
        tokenize_split("g", records, codes, tokenizer, vocab, cfg.world.system_prompt)


def test_tokenizer_loads_from_world_dir(tiny_world):
    cfg = load_config(tiny_world)
    assert len(load_text_tokenizer(cfg.paths.data / "world")) > 10


def _copy_data(tiny_world, tmp_path):
    """A scratch copy of the tiny project's world and tokenizer outputs -> its config."""
    import shutil
    src = load_config(tiny_world).paths.data
    for sub in ("world", "tokenizer"):
        shutil.copytree(src / sub, tmp_path / sub)
    return load_config(tiny_world, {"paths": {"data": str(tmp_path)}})


def test_codes_of_another_world_are_named(tiny_world, tmp_path):
    """A world rebuilt at another seed after the tokenizer ran: its codes no longer describe the
    images, and training on them must not start."""
    from uvlm.world.build import build_world
    cfg = _copy_data(tiny_world, tmp_path)
    vocab_for(cfg)  # the matching pair loads
    build_world(cfg.world, cfg.seed + 1, tmp_path / "world", progress=False)
    other = load_config(tiny_world, {"paths": {"data": str(tmp_path)}, "seed": cfg.seed + 1})
    with pytest.raises(UVLMError, match=r"codes.npz' was made from another world.*world.json"):
        vocab_for(other)


def test_codes_of_a_smaller_codebook_are_named(tiny_world, tmp_path):
    cfg = _copy_data(tiny_world, tmp_path)
    bigger = load_config(tiny_world, {"paths": {"data": str(tmp_path)},
                                      "tokenizer": {"codebook_size": 2 * cfg.tokenizer.codebook_size}})
    with pytest.raises(UVLMError, match=r"codes.npz' holds codes of a 32-entry codebook.*tokenizer.codebook_size=64"):
        vocab_for(bigger)


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_damaged_inputs_are_named_by_file(tiny_world, tmp_path, damage):
    cfg = _copy_data(tiny_world, tmp_path)
    for path in (tmp_path / "tokenizer" / "codes.npz", tmp_path / "world" / "u_train.npz"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncate" else bytes(range(256)) * 4)
    with pytest.raises(UVLMError, match="codes.npz") as e:
        vocab_for(cfg)
    assert "allow_pickle" not in str(e.value) and "dvc repro tokenizer" in str(e.value)
    from uvlm.world.build import load_split
    with pytest.raises(UVLMError, match="u_train.npz"):
        load_split(tmp_path / "world", "u_train")


def test_a_corrupt_record_line_is_named(tiny_world, tmp_path):
    cfg = _copy_data(tiny_world, tmp_path)
    path = tmp_path / "world" / "u_train.jsonl"
    path.write_text(path.read_text()[:-40] + "\n")  # the last record cut short
    from uvlm.tokens.sequences import read_records
    with pytest.raises(UVLMError, match=r"u_train.jsonl' line 64"):
        read_records(cfg.paths.data / "world", "u_train")
