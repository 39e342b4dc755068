"""Text -> fixed-length token ids for the text encoders: CLIP's byte-level BPE and a word-level vocabulary.

Both frame a prompt the same way (`frame`): [bos, t_1, ..., t_n, eos, pad, ..., pad] of length
context_length (77 for CLIP); a prompt of more than context_length - 2 tokens keeps its first
context_length - 2 and warns (TruncationWarning), never silently. The empty prompt is [bos, eos, pad...]:
Stable Diffusion's unconditional input for classifier-free guidance.

CLIPTokenizer (the tokenizer/ folder of a Stable Diffusion checkpoint: vocab.json + merges.txt):
  1. clean: HTML entities unescaped (twice), Unicode NFC, whitespace runs -> one space, trimmed, lower-cased
     (openai/CLIP also runs ftfy.fix_text, a mojibake repair this code leaves out);
  2. split into words by CLIP's regex: the two special tokens | 's 't 're 've 'm 'll 'd | letter runs | single
     digits | runs of other non-space characters;
  3. map each word's UTF-8 bytes to printable characters (`bytes_to_unicode`), mark its last symbol with
     '</w>', and apply byte-pair merges: repeatedly join the adjacent pair (a, b) of lowest rank in
     merges.txt (line order) until no ranked pair remains;
  4. look each symbol up in vocab.json.

WordTokenizer: the words of step 2 (after step 1), ids by a vocabulary built from training captions:
<pad> 0, <bos> 1, <eos> 2, <unk> 3, then words by decreasing count, ties alphabetical. Saved as JSON.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import html
import json
import os
import unicodedata
import warnings

import numpy as np
import regex

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
WORD_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_SPLIT = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
                       r"[^\s\p{L}\p{N}]+", regex.IGNORECASE)


class TokenizerError(ValueError):
    """Tokenizer files are missing or unreadable, or a token is not in the vocabulary."""


class TruncationWarning(UserWarning):
    """A prompt was longer than the context and lost its tail."""


def clean(text: str) -> str:
    """Step 1: unescaped, NFC, whitespace collapsed, trimmed, lower-cased."""
    text = unicodedata.normalize("NFC", html.unescape(html.unescape(text)))
    return regex.sub(r"\s+", " ", text).strip().lower()


def words(text: str) -> list[str]:
    """Steps 1-2: the cleaned text split by CLIP's regex."""
    return _SPLIT.findall(clean(text))


def frame(ids: list[int], bos: int, eos: int, pad: int, length: int, text: str) -> np.ndarray:
    """[bos, ids..., eos, pad...] of `length`; ids beyond length - 2 are dropped with a TruncationWarning."""
    if len(ids) > length - 2:
        warnings.warn(f"Prompt {text[:60]!r} is {len(ids) + 2} tokens long (with bos and eos); only the first "
                      f"{length} are kept.", TruncationWarning, stacklevel=4)
        ids = ids[:length - 2]
    return np.array([bos, *ids, eos] + [pad] * (length - 2 - len(ids)), np.int32)


def encode_batch(tokenizer, texts) -> np.ndarray:
    """int32 (len(texts), context_length): each text (or the one str) encoded and framed."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    t = tokenizer
    rows = [frame(t.encode(text), t.bos_id, t.eos_id, t.pad_id, t.context_length, text) for text in texts]
    return np.stack(rows) if rows else np.zeros((0, t.context_length), np.int32)


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> one printable character: the 188 bytes that print as themselves ('!'..'~', '¡'..'¬',
    '®'..'ÿ') keep their code point; the others (controls, space, ...) take 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in printable else next(extra)) for b in range(256)}


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Step 3 for one byte-mapped word: its symbols, the last marked '</w>', merged by lowest rank first."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise TokenizerError(f"Cannot read the {what} {path}: {err}.") from None


def _special(value) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json state it (a string or {'content'})."""
    return value.get("content") if isinstance(value, dict) else value


@dataclasses.dataclass(frozen=True, eq=False)
class CLIPTokenizer:
    """CLIP's byte-level BPE; `tokenizer(texts)` -> int32 (len(texts), context_length)."""

    vocab: dict[str, int]
    ranks: dict[tuple[str, str], int]
    context_length: int = 77
    pad_token: str = EOS  # SD 1.x pads with <|endoftext|>, SD 2.x with '!'
    source: str = "the vocabulary"

    def __post_init__(self):
        missing = [t for t in (BOS, EOS, self.pad_token) if t not in self.vocab]
        if missing:
            raise TokenizerError(f"{self.source} lacks the special token {missing[0]!r}.")

    @classmethod
    def from_folder(cls, folder: str, context_length: int = 77) -> "CLIPTokenizer":
        """vocab.json + merges.txt (first line '#version: ...'), and special_tokens_map.json's (or
        tokenizer_config.json's) pad_token where present."""
        vocab_path, merges_path = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        for path in (vocab_path, merges_path):
            if not os.path.isfile(path):
                raise TokenizerError(f"{path} does not exist; give a CLIP tokenizer folder holding vocab.json and "
                                     f"merges.txt (a Stable Diffusion checkpoint's tokenizer/).")
        vocab = _read_json(vocab_path, "CLIP vocabulary")
        try:
            with open(merges_path, encoding="utf-8") as f:
                lines = [ln.split() for ln in f.read().splitlines() if ln.strip() and not ln.startswith("#version")]
        except (OSError, UnicodeDecodeError) as err:
            raise TokenizerError(f"Cannot read the BPE merges {merges_path}: {err}.") from None
        bad = next((k for k, parts in enumerate(lines) if len(parts) != 2), None)
        if bad is not None or not isinstance(vocab, dict):
            raise TokenizerError(f"{merges_path} must list one merge 'a b' per line and {vocab_path} map tokens "
                                 f"to ids" + (f"; merge {bad + 1} is {' '.join(lines[bad])!r}." if bad is not None
                                              else "."))
        settings = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            path = os.path.join(folder, name)
            settings.update(_read_json(path, "tokenizer settings") if os.path.isfile(path) else {})
        return cls(vocab, {(a, b): k for k, (a, b) in enumerate(lines)},
                   context_length, _special(settings.get("pad_token")) or EOS, source=vocab_path)

    @property
    def bos_id(self) -> int:
        return self.vocab[BOS]

    @property
    def eos_id(self) -> int:
        return self.vocab[EOS]

    @property
    def pad_id(self) -> int:
        return self.vocab[self.pad_token]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """Steps 1-3: the BPE symbols of text."""
        byte_map = bytes_to_unicode()
        return [s for w in words(text) for s in
                ([w] if w in (BOS, EOS) else bpe("".join(byte_map[b] for b in w.encode("utf-8")), self.ranks))]

    def encode(self, text: str) -> list[int]:
        """The ids of text's tokens, without bos / eos."""
        try:
            return [self.vocab[s] for s in self.tokenize(text)]
        except KeyError as err:
            raise TokenizerError(f"Token {err.args[0]!r} of {text[:60]!r} is not in {self.source}; vocab.json "
                                 f"and merges.txt do not belong together.") from None

    def __call__(self, texts) -> np.ndarray:
        return encode_batch(self, texts)

    def decode(self, ids) -> str:
        """The text of ids, special tokens dropped: '</w>' becomes a space, symbols map back to bytes."""
        inverse = {v: k for k, v in self.vocab.items()}
        unbyte = {c: b for b, c in bytes_to_unicode().items()}
        specials = {self.bos_id, self.eos_id, self.pad_id}
        symbols = "".join(inverse[int(i)] for i in ids if int(i) not in specials)
        return bytes(unbyte[c] for c in symbols).decode("utf-8", "replace").replace("</w>", " ").strip()


@dataclasses.dataclass(frozen=True, eq=False)
class WordTokenizer:
    """One id per word (CLIP's cleanup and split); unknown words -> <unk>. `tokenizer(texts)` as CLIPTokenizer."""

    vocab: tuple[str, ...]  # WORD_SPECIALS, then words
    context_length: int = 77

    @classmethod
    def build(cls, captions, context_length: int = 77, min_count: int = 1) -> "WordTokenizer":
        """The vocabulary of `captions`: words seen at least min_count times, by decreasing count, then A-Z."""
        counts = collections.Counter(w for c in captions for w in words(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in WORD_SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls((*WORD_SPECIALS, *kept), context_length)

    @classmethod
    def load(cls, path: str) -> "WordTokenizer":
        data = _read_json(path, "word vocabulary")
        if not isinstance(data, dict) or data.get("type") != "word_level" or \
                tuple(data.get("vocab", ())[:len(WORD_SPECIALS)]) != WORD_SPECIALS:
            raise TokenizerError(f"{path} is not a word-level vocabulary written by WordTokenizer.save.")
        return cls(tuple(data["vocab"]), int(data["context_length"]))

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"type": "word_level", "context_length": self.context_length, "vocab": list(self.vocab)}, f,
                      ensure_ascii=False, indent=0)

    @functools.cached_property
    def ids(self) -> dict[str, int]:
        return {w: k for k, w in enumerate(self.vocab)}

    pad_id, bos_id, eos_id, unk_id = range(4)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, self.unk_id) for w in words(text)]

    def __call__(self, texts) -> np.ndarray:
        return encode_batch(self, texts)

    def decode(self, ids) -> str:
        return " ".join(self.vocab[int(i)] for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id))


def load_tokenizer(path: str, context_length: int = 77) -> CLIPTokenizer | WordTokenizer:
    """A CLIP tokenizer folder (vocab.json + merges.txt; a checkpoint root with tokenizer/ too), framing to
    context_length, or a word vocabulary .json written by WordTokenizer.save (framing to its saved length)."""
    if os.path.isfile(path):
        return WordTokenizer.load(path)
    if os.path.isdir(os.path.join(path, "tokenizer")):
        path = os.path.join(path, "tokenizer")
    if os.path.isdir(path):
        return CLIPTokenizer.from_folder(path, context_length)
    raise TokenizerError(f"Tokenizer {path} does not exist; give a folder with vocab.json and merges.txt or a "
                         f"word vocabulary .json.")
