"""Window geometry: which window an event is in, when a window is provisional and final, and
how a slice of a window is named. One home, because ingest, join, merge and the store must
agree on every one of these to the millisecond and the byte.

Windows are tumbling and aligned to the epoch: an event at ``t`` belongs to the window starting
at ``t - t % window``. Each window slice has two closing times, both compared with a watermark
(the event time every relevant input has passed):

- **provisional** at ``end + grace``: predictions later than this are *late*, so the window's
  predictions are complete and its label-free results (drift, data quality) are final;
- **final** at ``end + label_horizon``: labels later than this no longer count, so its
  performance is final and the window is forgotten.

A *slice* is the whole model (segment key ``""``) or one segment dimension's value
(``channel=web``): one slice per dimension, never one per combination, keeps the number of
series linear in the number of dimensions. Slice keys use the store's canonical, reversible
encoding (:func:`segment_key`), so a key read back from a partial, a checkpoint or a database
row names the same slice.

>>> window_start(1_000_123, 60_000), provisional_at(1_020_000, 10_000), final_at(1_020_000, 30_000)
(960000, 1030000, 1050000)
>>> segment_slices({"region": "EU", "channel": "web"})
['', 'channel=web', 'region=EU']
>>> parse_segment_key(segment_key({"b": "x&y", "a": "1"}))
{'a': '1', 'b': 'x&y'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import numpy as np

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "OVERFLOW_SEGMENT",
    "HasWindowShape",
    "Phase",
    "Shape",
    "closing_epoch",
    "due_phase",
    "due_phase_at",
    "early_label_expiry",
    "final_at",
    "last_provisional_start",
    "parse_segment_key",
    "provisional_at",
    "segment_key",
    "segment_slices",
    "window_shapes",
    "window_start",
]

#: a watermark before any event (``-2**62``: far below any epoch-ms time, far from overflow)
MIN_WATERMARK = -(2**62)
#: a watermark after every event: an input that ended, or every input idle
MAX_WATERMARK = 2**62
#: the segment value that stands for every value past a dimension's cap (``max_segment_values``)
OVERFLOW_SEGMENT = "__other__"

#: (window, grace, label horizon) in milliseconds
Shape = tuple[int, int, int]
T = TypeVar("T", int, np.ndarray)


class HasWindowShape(Protocol):
    """What geometry needs of a model's configuration."""

    @property
    def window_ms(self) -> int: ...
    @property
    def grace_ms(self) -> int: ...
    @property
    def label_horizon_ms(self) -> int: ...


def window_start(t: T, window_ms: T | int) -> T:
    """The start of the window holding event time ``t`` (scalars or arrays)."""
    return t - t % window_ms


def last_provisional_start(watermark: int, window_ms: int, grace_ms: int) -> int:
    """The start of the newest window whose predictions are complete at ``watermark``
    (``provisional_at(end) <= watermark``), whether or not anything arrived in it.

    >>> last_provisional_start(125_000, 60_000, 5_000)
    60000
    """
    return window_start(watermark - grace_ms - window_ms, window_ms)


def provisional_at(end: T, grace_ms: T | int) -> T:
    """When a window's predictions are complete: a prediction arriving once a watermark has
    reached this is late."""
    return end + grace_ms


def final_at(end: T, label_horizon_ms: T | int) -> T:
    """When a window's labels are complete and the window is forgotten."""
    return end + label_horizon_ms


def early_label_expiry(label_ms: int, window_ms: int, grace_ms: int, label_horizon_ms: int) -> int:
    """Until when, on prediction event time, a label that came before its prediction waits.

    A label horizon after the label, but never before the grace of the label's own window has
    passed: a prediction stamped no later than its label is in that window or an earlier one,
    so while it is not late its label is still waiting, whatever the order in which the two
    topics reached the join (docs/architecture.md, "Lateness by a source's own event time").
    """
    own_window_end = window_start(label_ms, window_ms) + window_ms
    return max(label_ms + label_horizon_ms, provisional_at(own_window_end, grace_ms))


Phase = Literal["provisional", "final"]


def due_phase(
    end: int, shape: HasWindowShape, watermark: int, final_watermark: int, *, provisional_done: bool
) -> Phase | None:
    """Which result of a window these watermarks call for now, if any: final once the label
    horizon has passed (whether or not a provisional result was sent), provisional once the
    grace has passed and no provisional result was sent yet."""
    return due_phase_at(
        provisional_at(end, shape.grace_ms),
        final_at(end, shape.label_horizon_ms),
        watermark,
        final_watermark,
        provisional_done=provisional_done,
    )


def due_phase_at(
    provisional_time: int, final_time: int, watermark: int, final_watermark: int, *, provisional_done: bool
) -> Phase | None:
    """:func:`due_phase` for a window whose two closing times are already known."""
    if final_time <= final_watermark:
        return "final"
    if provisional_time <= watermark and not provisional_done:
        return "provisional"
    return None


def window_shapes(models: Iterable[HasWindowShape]) -> list[Shape]:
    """The distinct (window, grace, label horizon) of these models' configurations."""
    return sorted({(m.window_ms, m.grace_ms, m.label_horizon_ms) for m in models})


def closing_epoch(
    shapes: Sequence[Shape], watermark: int, final_watermark: int
) -> tuple[tuple[int, int], ...]:
    """Which windows these watermarks have closed (provisionally) and finalised, per shape.

    Every event-time decision of the join and the merge (late, provisional, final) compares a
    watermark with a window's ``end + grace`` or ``end + horizon``, and windows are aligned, so
    those decisions change only when this tuple does. Watermark messages (ticks and Progress)
    that leave it unchanged can be skipped without changing any result; ``floor`` is monotone,
    so this holds for the minimum over sources too."""
    return tuple(
        ((watermark - grace) // window, (final_watermark - horizon) // window)
        for window, grace, horizon in shapes
    )


def segment_key(segment: Mapping[str, str]) -> str:
    """The canonical, reversible string of a segment: ``""`` for the whole model, ``dim=value``.

    A UNIQUE constraint and a dict key need a plain string. Items are sorted and
    percent-encoded, so dict order cannot create two keys for one slice and a value containing
    ``=`` or ``&`` still parses back exactly.

    >>> segment_key({}), segment_key({"region": "EU"}), segment_key({"b": "x&y", "a": "1"})
    ('', 'region=EU', 'a=1&b=x%26y')
    """
    return urlencode(sorted((str(k), str(v)) for k, v in segment.items()), quote_via=quote)


def parse_segment_key(key: str) -> dict[str, str]:
    """Invert :func:`segment_key`.

    >>> parse_segment_key("a=1&b=x%26y"), parse_segment_key("")
    ({'a': '1', 'b': 'x&y'}, {})
    """
    return dict(parse_qsl(key, keep_blank_values=True))


def segment_slices(segments: Mapping[str, str] | None) -> list[str]:
    """The slice keys an event counts in: the whole model (``""``) and one per dimension."""
    slices = [""]
    if segments:
        slices.extend(segment_key({k: v}) for k, v in sorted(segments.items()))
    return slices
