"""CLIP's byte-pair tokenizer without torch: texts in, (N, context) int64 token arrays out.

Produces the same tokens as open_clip's `SimpleTokenizer` with its defaults (ftfy and HTML
clean-up, whitespace collapsed, lower case, truncation that keeps the end-of-text token), from
the same merges file, which an exported text encoder keeps beside its weights. The tests compare
the two on many texts; an export refuses a tokenizer this one does not reproduce.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

MERGES = 48894  # the merges open_clip's vocabulary uses: lines 1..48894 of the file
START, END = "<start_of_text>", "<end_of_text>"
_PATTERN = (
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


@lru_cache(maxsize=1)
def _byte_symbols() -> tuple[str, ...]:
    """One printable character per byte value: printable Latin-1 bytes stand for themselves,
    the others (controls, space) are moved to code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    kept = set(printable)
    symbols = {b: chr(b) for b in printable}
    moved = (b for b in range(256) if b not in kept)
    for offset, byte in enumerate(moved):
        symbols[byte] = chr(256 + offset)
    return tuple(symbols[b] for b in range(256))


class ClipTokenizer:
    def __init__(self, merges_file: Path, context_length: int = 77) -> None:
        import regex

        # Only the first MERGES lines are used, and a merge is looked up by its line ("a b"):
        # a third of the time of splitting the whole file into pairs (which a search waits for).
        text = gzip.decompress(Path(merges_file).read_bytes()).decode("utf-8")
        merges = text.split("\n", MERGES + 1)[1 : MERGES + 1]
        symbols = sorted(_byte_symbols(), key=ord)  # the vocabulary lists them by code point
        vocabulary = symbols + [s + "</w>" for s in symbols]
        vocabulary += [merge.replace(" ", "") for merge in merges] + [START, END]
        self.ids = dict(zip(vocabulary, range(len(vocabulary)), strict=True))
        self.ranks = dict(zip(merges, range(len(merges)), strict=True))
        self.start, self.end = self.ids[START], self.ids[END]
        self.context_length = context_length
        self._pattern = regex.compile(_PATTERN, regex.IGNORECASE)
        self._words: dict[str, list[int]] = {}

    def _word_ids(self, word: str) -> list[int]:
        """Merge a word's byte symbols pair by pair, lowest merge rank first, into token ids."""
        cached = self._words.get(word)
        if cached is not None:
            return cached
        symbols = [_byte_symbols()[b] for b in word.encode("utf-8")]
        parts = symbols[:-1] + [symbols[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [
                (self.ranks.get(f"{a} {b}", MERGES), i)
                for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))
            ]
            best, at = min(ranked)
            if best == MERGES:
                break
            pair = (parts[at], parts[at + 1])
            merged: list[str] = []
            i = 0
            while i < len(parts):  # merge every occurrence of the pair, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.ids[p] for p in parts]
        self._words[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in self._pattern.findall(_clean(text)):
            ids.extend([self.ids[word]] if word in (START, END) else self._word_ids(word))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text), self.end]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.end
            out[row, : len(ids)] = ids
        return out


def _clean(text: str) -> str:
    if not (text.isascii() and text.isprintable() and "&" not in text):
        # ftfy leaves printable ASCII without entities as it is; the rest it may mend. Not
        # importing it for a plain query saves 0.03-0.04 s of a search from the shell.
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()
