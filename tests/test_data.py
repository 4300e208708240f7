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
