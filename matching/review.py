"""Review decisions on match reports (the review desk builds on this)."""
from __future__ import annotations

from matching.models import Match


def review_auto_resolve(*, matches: list[Match]) -> None:
    """Apply earlier decisions to freshly written matches (e.g. dismissed pairs, licences).

    Called inside the transaction that writes the matches, before alerts are queued.
    No decisions exist yet, so nothing changes.
    """
    return None
