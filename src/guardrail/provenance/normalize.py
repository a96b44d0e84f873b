"""Served text → the words a sketch is made of, the same however the text was reformatted.

A leaked answer is rarely the bytes that were served: it is re-rendered (markdown stripped or
added), re-wrapped, renumbered, retyped in another case, pasted through a word processor that
curls the quotes. What survives all of that is the sequence of words, so that is what is
kept: NFKC-folded and lower-cased, punctuation and markup gone, list numbers and bullets at
the start of a line and code-fence lines dropped. Numbers inside the text are kept: in
answers to templated questions they are much of what tells two answers apart.

ASCII text (most of it) takes one ``bytes.translate`` and one ``split``, both in C; other
text goes through ``unicodedata`` and a regular expression first, and lands on the same
words for its ASCII part.
"""

from __future__ import annotations

import re
import string
import unicodedata

# A list number ("1.", "12)", "(3)"), a bullet or quote or heading marker, or a code fence
# with its language tag, at the start of a line: layout, not content.
_MARKER = re.compile(
    r"\n[ \t]*(?:\(?\d{1,3}[.)]|[-*+>#\u2022\u00b7\u2013\u2014]+|```[\w+-]*|~~~[\w+-]*)(?=\s|$)"
)
# Apostrophes join ("don't" -> "dont"): "don t" would make a shingle of its own.
_APOSTROPHES = "'\u2019\u2018\u02bc"
_ASCII_DROP = b"'"
_CONTROL = bytes(range(32))
_ASCII_TABLE = bytes.maketrans(
    string.punctuation.replace("'", "").encode() + _CONTROL + string.ascii_uppercase.encode(),
    b" " * (len(string.punctuation) - 1 + len(_CONTROL)) + string.ascii_lowercase.encode(),
)
_NOT_WORD = re.compile(r"[\W_]+")
_NO_APOSTROPHE = str.maketrans("", "", _APOSTROPHES)


def strip_markers(text: str) -> str:
    """``text`` without the list numbers, bullets and fences that open its lines."""
    if "\n" not in text and text[:1] not in "-*+>#(0123456789`~\u2022\u00b7\u2013\u2014":
        return text
    return _MARKER.sub(" ", "\n" + text)


def words(text: str) -> list[bytes]:
    """The words of ``text`` as UTF-8, lower case, without punctuation or layout."""
    return normalized(text).split()


def normalized(text: str) -> bytes:
    """``text``'s words as UTF-8 separated by runs of b" " and nothing else (no other
    whitespace byte survives: UTF-8 sequences of other characters are all >= 0x80), so that
    a vectorised sketch finds the words without splitting them into objects."""
    text = strip_markers(text)
    if text.isascii():
        return text.encode().translate(_ASCII_TABLE, _ASCII_DROP)
    text = unicodedata.normalize("NFKC", text).translate(_NO_APOSTROPHE).casefold()
    # surrogatepass: JSON may carry lone surrogates, which strict UTF-8 refuses
    return _NOT_WORD.sub(" ", text).encode("utf-8", "surrogatepass")
