"""The verdicts a match can have, and their order.

Plain Python so the Celery matcher, the command line and Spark jobs name them
the same way. ``matching.core.matcher`` decides which one a candidate gets.
"""
from __future__ import annotations

EXACT = "exact"
NEAR_DUPLICATE = "near_duplicate"
MODIFIED_COPY = "modified_copy"
SIMILAR = "similar"
NONE = "none"
POSITIVE_VERDICTS = frozenset({EXACT, NEAR_DUPLICATE, MODIFIED_COPY})
# Best first when two candidates score the same.
VERDICT_ORDER = {EXACT: 0, NEAR_DUPLICATE: 1, MODIFIED_COPY: 2, SIMILAR: 3, NONE: 4}
