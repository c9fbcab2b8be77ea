"""Which registered version carries the ``champion`` alias: policy, not the store's business."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol


class Version(Protocol):
    version: str
    tags: Mapping[str, str]


def pick_champion(versions: Iterable[Version], rank_by: str) -> Version | None:
    """The version whose tag ``rank_by`` is highest; the earliest such version on a tie.

    Ranked from every version each time, so the alias ends right even when experiments evaluate
    concurrently and register out of order. Versions without a numeric ``rank_by`` are skipped.
    """
    ranked = [v for v in versions if _is_number(v.tags.get(rank_by))]
    if not ranked:
        return None
    return max(ranked, key=lambda v: (float(v.tags[rank_by]), -int(v.version)))


def _is_number(value: str | None) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
