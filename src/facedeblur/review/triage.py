"""Triage on a job's page: the facts tracks are sorted by, which tracks a reviewer chose to hide, and the order.

Sorting and hiding are part of the page's address (`?sort=size&hide=not_a_face`), so a view can be bookmarked
or shared and works without scripts. The facts come from the manifest (docs/manifest-schema.md, `tracks[]`):
size is the largest face of the track (shorter side of its box, px, as `dropped_tracks[].largest_face`), score the
best detector confidence (as `dropped_tracks[].best_score`), duration end_time - start_time in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .store import MARK_STATES, Mark

SORTS = {"id": "track id", "size": "face size", "score": "detector score", "duration": "duration"}


class BadTriage(ValueError):
    """A sort or hide value that is not one of the choices; its message names them."""


@dataclass(frozen=True)
class TrackView:
    sort: str = "id"
    hide: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_args(cls, args: Any) -> "TrackView":
        sort = args.get("sort", "") or "id"
        if sort not in SORTS:
            raise BadTriage(f"sort {sort!r} is not one of {', '.join(SORTS)}")
        hide = frozenset(value for value in args.getlist("hide") if value)
        unknown = hide - set(MARK_STATES)
        if unknown:
            raise BadTriage(f"hide {sorted(unknown)[0]!r} is not one of {', '.join(MARK_STATES)}")
        return cls(sort, hide)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def track_facts(track: dict[str, Any]) -> dict[str, float | None]:
    """size (px), score (0-1) and duration (s) of one manifest track; None where the manifest lacks it."""
    sizes, scores = [], []
    for frame in track.get("frames") or []:
        box = frame.get("box")
        if isinstance(box, list) and len(box) == 4 and all(_number(v) is not None for v in box):
            sizes.append(min(box[2] - box[0], box[3] - box[1]))
        score = _number(frame.get("score"))
        if score is not None:
            scores.append(score)
    start, end = _number(track.get("start_time")), _number(track.get("end_time"))
    return {"size": round(max(sizes), 1) if sizes else None, "score": round(max(scores), 3) if scores else None,
            "duration": round(end - start, 2) if start is not None and end is not None else None}


def arrange_tracks(tracks: list[dict[str, Any]], marks: dict[int, Mark], view: TrackView,
                   facts: dict[int, dict[str, float | None]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shown, hidden): the tracks to show in the view's order (largest, best, longest first; ties by id; a track
    without the fact last), and those hidden by their mark. `facts`: track id -> track_facts(track)."""
    shown, hidden = [], []
    for track in tracks:
        mark = marks.get(track.get("id"))
        (hidden if (mark.status if mark else "unmarked") in view.hide else shown).append(track)
    if view.sort != "id":
        def order(track: dict[str, Any]) -> tuple[bool, float, int]:
            value = facts[track["id"]][view.sort]
            return value is None, -(value or 0.0), track["id"]
        shown.sort(key=order)
    return shown, hidden
