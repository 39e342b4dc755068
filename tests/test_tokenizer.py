"""Tokenizers: CLIP's byte-level BPE on merges built by hand, framing, errors, and the word-level vocabulary."""
import json

import numpy as np
import pytest

from data_sources import tokenizer as tk

MERGES = ["l o", "lo w</w>", "e r</w>", "n e", "ne w</w>", "e w</w>"]


def _clip_folder(path, merges=MERGES, drop=(), pad_token=None):
    """A CLIP-style vocabulary: the 256 byte symbols, each with '</w>', every merge's result, then bos, eos."""
    base = list(tk.bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + [m.replace(" ", "") for m in merges] + [tk.BOS, tk.EOS]
    (path / "vocab.json").write_text(json.dumps({t: k for k, t in enumerate(t for t in tokens if t not in drop)}))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    if pad_token:
        (path / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": pad_token}}))
    return tk.CLIPTokenizer.from_folder(str(path))


def test_bytes_to_unicode_is_a_printable_bijection():
    table = tk.bytes_to_unicode()
    assert len(set(table.values())) == 256 and all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == "\u0120" and table[0] == "\u0100"


def test_bpe_follows_merge_ranks(tmp_path):
    """lower: l o w e r</w> -> (l,o) rank 0 -> lo w e r</w> -> (e,r</w>) rank 2 -> lo w er</w>; no 'lo w' merge.
    new: (n,e) rank 3 beats (e,w</w>) rank 5 -> ne w</w> -> (ne,w</w>) rank 4 -> new</w>.
    newer: (e,r</w>) 2, then (n,e) 3 -> ne w er</w>.  low: lo w</w> -> low</w>."""
    tok = _clip_folder(tmp_path)
    assert tok.tokenize("Lower  NEW newer low") == ["lo", "w", "er</w>", "new</w>", "ne", "w", "er</w>", "low</w>"]
    assert tk.bpe("xew", tok.ranks) == ["x", "ew</w>"]
    assert tok.tokenize("café!") == ["c", "a", "f", "\u00c3", "\u00a9</w>", "!</w>"]  # é = bytes C3 A9


def test_framing_round_trip_and_the_empty_prompt(tmp_path):
    tok = _clip_folder(tmp_path)
    ids = tok(["low", ""])
    assert ids.shape == (2, 77) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[0, :3], [tok.bos_id, tok.vocab["low</w>"], tok.eos_id])
    np.testing.assert_array_equal(ids[1], [tok.bos_id, tok.eos_id] + [tok.eos_id] * 75)  # pad = eos (SD 1.x)
    text = "A café, 3 &amp; newer dogs!"
    assert tok.decode(tok(text)[0]) == " ".join(tk.words(text)) == "a café , 3 & newer dogs !"


def test_truncation_warns_and_keeps_eos(tmp_path):
    tok = _clip_folder(tmp_path)
    with pytest.warns(tk.TruncationWarning, match="80 tokens long"):
        ids = tok(" ".join(["low"] * 78))[0]
    assert ids[-1] == tok.eos_id and (ids[1:-1] == tok.vocab["low</w>"]).all()


def test_pad_token_from_special_tokens_map(tmp_path):
    tok = _clip_folder(tmp_path, pad_token="!")  # Stable Diffusion 2.x pads with '!'
    assert tok.pad_id == tok.vocab["!"] and tok("")[0, 2] == tok.vocab["!"]


def test_one_line_errors(tmp_path):
    with pytest.raises(tk.TokenizerError, match="vocab.json does not exist"):
        tk.CLIPTokenizer.from_folder(str(tmp_path))
    tok = _clip_folder(tmp_path, drop=("er</w>",))
    with pytest.raises(tk.TokenizerError, match="Token 'er</w>' of 'newer' is not in .*vocab.json"):
        tok("newer")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nl o\nlow\n")
    with pytest.raises(tk.TokenizerError, match="merge 2 is 'low'"):
        tk.CLIPTokenizer.from_folder(str(tmp_path))
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(tk.TokenizerError, match="Cannot read the CLIP vocabulary"):
        tk.CLIPTokenizer.from_folder(str(tmp_path))
    with pytest.raises(tk.TokenizerError, match="does not exist"):
        tk.load_tokenizer(str(tmp_path / "nowhere"))


def test_word_tokenizer_vocabulary_and_save_load(tmp_path):
    captions = ["a 3 left of a 7", "a 7 left of a 1", "A 3, left"]
    tok = tk.WordTokenizer.build(captions, context_length=8)
    # counts: a 4, left 3, 3 2, 7 2, of 2, ',' 1, 1 1 -> by count, then alphabetically
    assert tok.vocab == (*tk.WORD_SPECIALS, "a", "left", "3", "7", "of", ",", "1")
    ids = tok(["a 7 left of a 3", "a 9", ""])
    np.testing.assert_array_equal(ids[0], [1, 4, 7, 5, 8, 4, 6, 2])
    np.testing.assert_array_equal(ids[1], [1, 4, tok.unk_id, 2, 0, 0, 0, 0])
    np.testing.assert_array_equal(ids[2], [1, 2, 0, 0, 0, 0, 0, 0])
    tok.save(str(tmp_path / "vocab.json"))
    loaded = tk.load_tokenizer(str(tmp_path / "vocab.json"))
    np.testing.assert_array_equal(loaded(["a 7 left of a 3", "a 9", ""]), ids)
    assert loaded.decode(ids[0]) == "a 7 left of a 3"
    with pytest.warns(tk.TruncationWarning):
        tok("a a a a a a a")
    (tmp_path / "other.json").write_text(json.dumps({"vocab": ["x"]}))
    with pytest.raises(tk.TokenizerError, match="not a word-level vocabulary"):
        tk.WordTokenizer.load(str(tmp_path / "other.json"))


def test_load_tokenizer_finds_a_checkpoints_tokenizer_folder(tmp_path):
    (tmp_path / "tokenizer").mkdir()
    made = _clip_folder(tmp_path / "tokenizer")
    loaded = tk.load_tokenizer(str(tmp_path), context_length=16)
    assert isinstance(loaded, tk.CLIPTokenizer) and loaded("newer").shape == (1, 16)
    np.testing.assert_array_equal(loaded("newer")[0, :5], made("newer")[0, :5])
