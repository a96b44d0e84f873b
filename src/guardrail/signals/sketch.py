"""Small, stable summaries of prompts and populations, cheap enough for every request.

Prompts: a bottom-k sketch of the prompt's word bigrams (the ``K`` smallest CRC-32 values of
the set). Two sketches estimate the Jaccard similarity of the two bigram sets; the smallest
values double as locality-sensitive bucket ids for the cross-account index. CRC-32 rather than
``hash()``: every worker and host must compute the same sketch for the same prompt, and
``zlib.crc32`` chains a bigram (``crc32(b, crc32(a))``) at C speed. datasketch's MinHash is
the reference: over the same 64 words it took 296 µs a prompt here (128 permutations; 243 µs
with 32) against about 20 µs for this sketch, and it needs numpy.

Populations: distinct counts are linear-counting bitmaps, OR-able across workers.
"""

from __future__ import annotations

import math
import operator
import string
import zlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from struct import Struct

#: Values kept per sketch.
K = 12
#: Words a prompt needs to be sketched at all: short prompts ("hi", "thanks!") are alike
#: for everyone and say nothing about templates.
MIN_WORDS = 6
#: Characters of the prompt's start and end that are read. A template shows in its
#: instruction, which opens or closes a prompt; hashing a pasted document in the middle would
#: cost ~0.2 µs a word and tell nothing more. (Requests for reasoning are also looked for
#: further in: ``middle`` and ``ReasoningMatcher.anywhere``.)
HEAD, TAIL = 192, 64
#: Characters after the head and before the tail read for a request for reasoning (not
#: sketched): padding that hides an instruction has to be longer than this on both sides
#: (some 500 tokens each), and a long document costs at most ~150 µs to read.
MIDDLE = 2048
#: Estimated Jaccard similarity from which two prompts are near-duplicates, and the fewest
#: shared sketch values that may show it: a stock phrase ("think step by step") shares three
#: bigrams with every prompt that ends with it, which on short prompts can look like 0.25.
NEAR = 0.3
MIN_SHARED = 4
#: Across identities the bar is higher: strangers do ask alike ("write a cover letter for a
#: nursing job"), but a filled-in template with a short slot reads as a near copy (a campaign
#: of the simulator scores 0.83 at the median, its honest users 0.42).
NEAR_ELSEWHERE = 0.7
#: Template buckets per prompt: its smallest values.
BUCKETS = 2

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_PUNCTUATION = string.punctuation.encode()
_ASCII_SPACES = bytes.maketrans(b"\x1c\x1d\x1e\x1f", b"    ")
#: Characters from which a text with too few words is shingled instead (spaceless scripts).
SHINGLED_FROM = 24
#: Words of a prompt's opening and of its closing that make its two *frames*: a campaign's
#: instruction opens or closes what it sends ("Explain in detail, step by step, how you would
#: arrive at the answer: {q}"), and eight words are more than the stock phrases people add on
#: their own ("Let's think step by step." is five): a habit's frame takes in the words of the
#: question it closes, which change.
FRAME_WORDS = 8
_ENTRY = Struct(f"<I{K}I")  # exact-text CRC, then the sketch (padded with PAD)
# principal tag, time (s), exact CRC, the two frames (0: none), sketch
_TEMPLATE = Struct(f"<IIIII{K}I")
_TEMPLATE_HEAD = 5  # fields before the sketch
PAD = 0xFFFFFFFF


class Sketch:
    """A prompt's sketch and the CRC of its exact text (a copy is not a template); for a
    prompt that asks for reasoning, its two frames on its network (``frames``)."""

    __slots__ = ("exact", "frames", "values")

    def __init__(self, exact: int, values: tuple[int, ...]) -> None:
        self.exact = exact
        self.values = values  # ascending, at most K
        self.frames: tuple[int, int] = (0, 0)

    def pack(self) -> bytes:
        return _ENTRY.pack(self.exact, *self.values, *(PAD,) * (K - len(self.values)))

    def pack_template(self, tag: int, now: float) -> bytes:
        padding = (PAD,) * (K - len(self.values))
        head, tail = self.frames
        return _TEMPLATE.pack(
            tag, int(now) & 0xFFFFFFFF, self.exact, head, tail, *self.values, *padding
        )

    def buckets(self) -> tuple[str, ...]:
        return tuple(f"t:{value:08x}" for value in self.values[:BUCKETS])

    def frame_buckets(self) -> tuple[str, ...]:
        """The index buckets of its frames (none unless ``frame`` set them)."""
        head, tail = self.frames
        return (f"t:h{head:08x}", f"t:t{tail:08x}") if head else ()

    def frame(self, cut: str, network: str) -> None:
        """Set the frames of a prompt (``cut``: its excerpt) sent from ``network``: its first
        and its last FRAME_WORDS words, keyed by the network. Strangers on other networks who
        open or close alike ("can you explain ... step by step") do not share a frame; a
        campaign's accounts that send one instruction from one office do. A prompt of fewer
        than FRAME_WORDS + 3 words has none: its frame would be all of it."""
        words = _words(cut)
        if words is None or len(words) < FRAME_WORDS + 3:
            return
        key = zlib.crc32(network.encode("utf-8", "surrogatepass"))
        head = zlib.crc32(b" ".join(words[:FRAME_WORDS]), key) or 1
        tail = zlib.crc32(b" ".join(words[-FRAME_WORDS:]), key ^ 0x5A5A5A5A) or 1
        self.frames = (head, tail)

    @property
    def short(self) -> bool:
        """Fewer than K distinct bigrams (once requests for reasoning are cut out)."""
        return len(self.values) < K


def middle(text: str) -> str:
    """The lowercased part of a prompt that ``excerpt`` leaves out, up to MIDDLE characters on
    either side ("" when it reads it all): where ``ReasoningMatcher.anywhere`` looks for a
    request for reasoning that padding pushed out of the excerpt."""
    if len(text) <= HEAD + TAIL:
        return ""
    if len(text) <= HEAD + TAIL + 2 * MIDDLE:
        return text[HEAD:-TAIL].lower()
    return (text[HEAD : HEAD + MIDDLE] + "\n" + text[-TAIL - MIDDLE : -TAIL]).lower()


def excerpt(text: str) -> str:
    """The lowercased start and end of a prompt: what its sketch and the reasoning patterns
    read (instructions open or close a prompt; a pasted document in between only costs)."""
    if len(text) > HEAD + TAIL:
        return text[:HEAD].lower() + "\n" + text[-TAIL:].lower()
    return text.lower()


def sketch(text: str, cut: str | None = None) -> Sketch | None:
    """``cut``: ``excerpt(text)``, when the caller has it already."""
    exact = crc(text)
    words = _words(cut if cut is not None else excerpt(text))
    if words is None:
        return None
    # crc32(b, crc32(a)) is the CRC of a + b: a bigram's hash, with no Python-level loop
    bigrams = set(map(zlib.crc32, words[1:], map(zlib.crc32, words[:-1])))
    return Sketch(exact, tuple(sorted(bigrams)[:K]))


def _words(cut: str) -> list[bytes] | None:
    """The words of an excerpt, punctuation deleted, as UTF-8; None if too few to sketch."""
    if cut.isascii():
        # Most prompts: bytes.translate and bytes.split give the words below at a third of
        # the cost (str.split also splits on \x1c-\x1f, which the table makes spaces).
        words = cut.encode().translate(_ASCII_SPACES, _PUNCTUATION).split()
        if len(words) >= MIN_WORDS:
            return words
    # str.split, not bytes.split: every Unicode space separates words (a no-break space too)
    parts = cut.translate(_NO_PUNCTUATION).split()
    if len(parts) < MIN_WORDS:
        if len(cut) < SHINGLED_FROM:
            return None
        # A script written without spaces (Chinese, Japanese): overlapping 4-character shingles
        compact = "".join(parts)
        parts = [compact[i : i + 4] for i in range(0, len(compact) - 3, 2)]
        if len(parts) < MIN_WORDS:
            return None
    return "\n".join(parts).encode("utf-8", "surrogatepass").split(b"\n")


def similarity(a: Sequence[int], b: Sequence[int]) -> tuple[float, int]:
    """Jaccard estimate of two bottom-k sketches (the share of the union's k smallest values
    that both sets hold), and how many values that share is made of."""
    if not a or not b:
        return 0.0, 0
    both = set(a)
    both.intersection_update(b)
    if len(both) < MIN_SHARED:
        return 0.0, len(both)  # cannot count as near, whatever the ratio
    union = sorted(set(a).union(b))[:K]
    shared = sum(1 for value in union if value in both)
    return shared / len(union), shared


def near(sk: Sketch, entries: Sequence[bytes]) -> list[int]:
    """The exact-text CRCs of those ``entries`` (packed sketches) that are near-duplicates of
    ``sk``: usually none."""
    flat = _flat(entries, _ENTRY.size)
    mine = frozenset(sk.values)
    # One C-level intersection over every entry at once rules out the usual case (nothing
    # alike); fields that are not sketch values can only add false candidates, never hide one.
    if len(mine.intersection(flat)) < MIN_SHARED:
        return []
    exact, values = sk.exact, sk.values
    width = 1 + K
    found = []
    for start in range(0, len(flat), width):
        other = flat[start + 1 : start + width]
        if flat[start] == exact or len(mine.intersection(other)) < MIN_SHARED:
            continue
        estimate, shared = similarity(values, [v for v in other if v != PAD])
        if shared >= MIN_SHARED and estimate >= NEAR:
            found.append(flat[start])
    return found


def crc(text: str) -> int:
    """The exact-text CRC a sketch keeps of its prompt."""
    # surrogatepass: JSON may carry lone surrogates ("\udc80"), which strict UTF-8 refuses
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def any_near_elsewhere(
    sk: Sketch, tag: int, entries: Sequence[bytes], now: float, horizon: float
) -> bool:
    """Is any template-index entry a near copy of ``sk`` (as ``near``, at NEAR_ELSEWHERE),
    leaving out the identity's own (``tag``) and those older than ``horizon`` seconds?"""
    flat = _flat(entries, _TEMPLATE.size)
    mine = frozenset(sk.values)
    if len(mine.intersection(flat)) < MIN_SHARED:
        return False
    exact, values = sk.exact, sk.values
    stamp = int(now) & 0xFFFFFFFF
    limit = int(horizon)
    width = _TEMPLATE_HEAD + K
    for start in range(0, len(flat), width):
        other = flat[start + _TEMPLATE_HEAD : start + width]
        if (
            flat[start] == tag
            or flat[start + 2] == exact
            or (stamp - flat[start + 1]) & 0xFFFFFFFF > limit
            or len(mine.intersection(other)) < MIN_SHARED
        ):
            continue
        estimate, shared = similarity(values, [v for v in other if v != PAD])
        if shared >= MIN_SHARED and estimate >= NEAR_ELSEWHERE:
            return True
    return False


def frame_senders(
    sk: Sketch, tag: int, entries: Sequence[bytes], now: float, horizon: float
) -> int:
    """How many other principals (``tag`` is this one's) sent one of ``sk``'s frames within
    ``horizon`` seconds, as far as the template-index ``entries`` tell (a bucket keeps its
    newest BUCKET_SIZE: a count of at most that many). An exact copy of the prompt is left out,
    as by ``any_near_elsewhere``: students who paste one assignment's question send a copy,
    a campaign fills its frame with a new problem each time."""
    head, tail = sk.frames
    if not head:
        return 0
    exact = sk.exact
    flat = _flat(entries, _TEMPLATE.size)
    if head not in flat and tail not in flat:  # a C-level scan rules out the usual case
        return 0
    stamp = int(now) & 0xFFFFFFFF
    limit = int(horizon)
    senders = set()
    for start in range(0, len(flat), _TEMPLATE_HEAD + K):
        if (
            (flat[start + 3] == head or flat[start + 4] == tail)
            and flat[start] != tag
            and flat[start + 2] != exact
            and (stamp - flat[start + 1]) & 0xFFFFFFFF <= limit
        ):
            senders.add(flat[start])
    return len(senders)


def _flat(entries: Sequence[bytes], size: int) -> tuple[int, ...]:
    """Every entry's fields, one after another: one unpack for the lot. Entries of another
    size (none are written) are left out."""
    blob = b"".join(entries)
    if len(blob) != size * len(entries):
        blob = b"".join(entry for entry in entries if len(entry) == size)
    count = len(blob) // 4
    unpack = _UNPACK.get(count)
    if unpack is None:
        unpack = Struct(f"<{count}I").unpack
        if len(_UNPACK) < 64:
            _UNPACK[count] = unpack
    return unpack(blob)


_UNPACK: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def bit(key: str, bits: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % bits


def distinct(bitmap: int, bits: int) -> float:
    """Linear counting: the number of distinct keys that set the bits of ``bitmap``."""
    zeros = bits - bitmap.bit_count()
    if zeros == 0:
        return bits * math.log(bits)  # saturated: at least this many
    return bits * math.log(bits / zeros)


def undecay_table(half_life_hours: float) -> list[list[float]]:
    """``table[hour][h]``: the factor that brings hour ``h``'s counter, read at ``hour``, back
    to its weight when it was last filled."""
    return [[2.0 ** (((hour - h) % 24) / half_life_hours) for h in range(24)] for hour in range(24)]


def busy_hours(counts: Sequence[float], factors: Sequence[float]) -> int:
    """Hours of the day with a fair share of the activity (at least a quarter of the mean
    hour's).

    Hour counters decay like everything else, so an hour seen 20 h ago weighs less than the
    current one even for a client active around the clock: ``factors`` (a row of
    ``undecay_table``) first bring each back to its weight when it was filled. A count of
    busy hours reads like entropy here and costs a tenth of it (no logarithms).
    """
    undecayed = sorted(map(operator.mul, counts, factors))
    # at least a quarter of the mean of 24 hours; sorted, so a bisection counts them
    floor = sum(undecayed) / 96
    if floor <= 0:
        return 0
    return len(undecayed) - bisect_left(undecayed, floor)
