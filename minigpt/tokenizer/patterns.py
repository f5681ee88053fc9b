"""Pre-tokenizing: the split patterns of GPT-2 and GPT-4 (cl100k), and a fast splitter for them.

Byte-level BPE never merges across the pieces a regular expression cuts the text into ("pre-tokens").
GPT-2's pattern keeps contractions, letter runs, digit runs and punctuation runs apart, each with at most one
leading space; whitespace runs give their last space to the next word. GPT-4's pattern also splits digits into
groups of at most three and treats contractions case-insensitively.

Speed: the Unicode pattern needs the ``regex`` package (``\\p{L}``, ``\\p{N}``), which is about half as fast as
the standard ``re`` module. :class:`Splitter` therefore splits ASCII stretches with ``re`` and an ASCII-only
spelling of the same pattern, and uses ``regex`` only around non-ASCII text. The two are cut apart only at
positions where every split of the full pattern has a boundary anyway: just before a space that follows a
printable or control ASCII character which is not whitespace (no pre-token of either pattern contains
"non-space followed by space"), so the result is identical to ``regex.findall(pattern, text)``.

The whitespace class is spelled out (``[\\t\\n\\x0b\\x0c\\r ]``) because ``re``'s ``\\s`` also matches
``\\x1c``-``\\x1f``, which Unicode's White_Space property (used by ``regex`` and by tiktoken) does not.
"""
from __future__ import annotations

import re

import regex

from ..errors import MiniGPTError

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s+"""
)
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}

_WS = r"\t\n\x0b\x0c\r "  # Unicode White_Space restricted to ASCII
# ASCII-only spellings, equivalent to the patterns above on ASCII text. The possessive quantifiers of the GPT-4
# pattern are dropped: after them comes a class that cannot match what they consumed, so backtracking into
# them never finds another match, and greedy gives the same result (and `re` before 3.11 lacks them).
_FAST = {
    # letters first (the most common case; no other alternative can start where they do, except the
    # whitespace ones, which come after them in both spellings)
    "gpt2": (
        rf"""[A-Za-z]+| [A-Za-z]+|'(?:s|t|re|ve|m|ll|d)| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|"""
        rf"""[{_WS}]+"""
    ),
    "gpt4": (
        r"""'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]{1,3}|"""
        rf""" ?[^{_WS}A-Za-z0-9]+[\r\n]*|[{_WS}]*[\r\n]|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
    ),
}
NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def surrogate_error(word: str) -> MiniGPTError:
    bad = next(c for c in word if 0xD800 <= ord(c) <= 0xDFFF)
    return MiniGPTError(
        f"the text contains a lone surrogate {bad!r} (U+{ord(bad):04X}), which has no UTF-8 encoding; "
        "clean the text first (e.g. s.encode('utf-8', 'replace').decode('utf-8'))"
    )
_WS_CHARS = frozenset("\t\n\x0b\x0c\r ")
_BLOCK = 2048  # characters per block when the text is not all ASCII


def resolve_pattern(pattern: str) -> tuple[str, str]:
    """``(name, regex)`` for ``"gpt2"``, ``"gpt4"`` or a custom regular expression (name ``"custom"``)."""
    if not isinstance(pattern, str) or not pattern:
        raise MiniGPTError(f"pattern must be 'gpt2', 'gpt4' or a non-empty regular expression, got {pattern!r}")
    if pattern in PATTERNS:
        return pattern, PATTERNS[pattern]
    for name, pat in PATTERNS.items():
        if pattern == pat:
            return name, pat
    return "custom", pattern


def _is_cut(text: str, j: int) -> bool:
    """True when ``text[j] == ' '`` follows an ASCII character that is not whitespace (a safe cut)."""
    c = text[j - 1]
    return c < "\x80" and c not in _WS_CHARS


def safe_cut_before(text: str, lo: int, hi: int) -> int:
    """The largest safe cut point in ``(lo, hi)``, else ``lo``."""
    end = hi
    while True:
        j = text.rfind(" ", lo + 1, end)
        if j == -1:
            return lo
        if _is_cut(text, j):
            return j
        end = j


def safe_cut_after(text: str, lo: int) -> int:
    """The smallest safe cut point ``>= lo`` (``lo >= 1``), else ``len(text)``."""
    start = max(lo, 1)
    while True:
        j = text.find(" ", start)
        if j == -1:
            return len(text)
        if _is_cut(text, j):
            return j
        start = j + 1


class Splitter:
    """``splitter(text)`` -> list of pre-tokens, equal to ``regex.findall(pattern, text)``."""

    def __init__(self, pattern: str = "gpt2"):
        self.name, self.pattern = resolve_pattern(pattern)
        try:
            self._slow = regex.compile(self.pattern)
        except regex.error as e:
            raise MiniGPTError(f"the split pattern is not a valid regular expression: {e}") from None
        fast = _FAST.get(self.name)
        self._fast = re.compile(fast) if fast is not None else None

    def fast(self, text: str, pos: int = 0, endpos: int = 1 << 62) -> list[str]:
        """The ASCII-only split of ``text[pos:endpos]`` (only for ASCII text and the gpt2/gpt4 patterns)."""
        return self._fast.findall(text, pos, endpos)

    def slow(self, text: str, pos: int = 0, endpos: int = 1 << 62) -> list[str]:
        """The reference split of ``text[pos:endpos]`` with the ``regex`` package."""
        return self._slow.findall(text, pos, endpos)

    def __call__(self, text: str) -> list[str]:
        fast = self._fast
        if fast is None:
            return self._slow.findall(text)
        if text.isascii():
            return fast.findall(text)
        # Blocks of about _BLOCK characters, cut at safe places: most blocks of mostly-English text are pure
        # ASCII (an O(1) check on the copy), and only the others are scanned for their non-ASCII runs.
        out: list[str] = []
        n = len(text)
        i = 0
        while i < n:
            j = safe_cut_after(text, i + _BLOCK) if i + _BLOCK < n else n
            block = text[i:j]
            if block.isascii():
                out += fast.findall(block)
            else:
                out += self._mixed(block)
            i = j
        return out

    def _mixed(self, text: str) -> list[str]:
        """Split text that holds non-ASCII characters: `regex` around them, `re` elsewhere."""
        slow = self._slow.findall
        fast = self._fast.findall
        out: list[str] = []
        prev = 0
        for m in NON_ASCII.finditer(text):
            a, b = m.span()
            if a < prev:
                continue  # inside the region already given to `regex`
            left = safe_cut_before(text, prev, a)
            right = safe_cut_after(text, b + 1)
            # pos/endpos search as if the text were cut there (no lookbehind in these patterns), without copies
            if left > prev:
                out += fast(text, prev, left)
            out += slow(text, left, right)
            prev = right
        if prev < len(text):
            out += fast(text, prev)
        return out
