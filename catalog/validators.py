"""Names are single-line text (security review finding 14, docs/api.md, "Names").

A line break in a collection's name used to end up in an e-mail subject,
where Django refuses it (``BadHeaderError``) on every retry: the alert was
lost. Names of organisations, collections, API keys and webhook descriptions
are refused with a control character on create and update (API, portal,
admin, services); :func:`one_line` makes header text safe for rows stored
before that rule.
"""
from __future__ import annotations

import re

from django.core.exceptions import ValidationError

__all__ = ["one_line", "single_line"]

# C0 and C1 control characters (tab, CR, LF, NUL, ESC...) and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def single_line(value: str) -> None:
    """A Django validator: refuses line breaks and other control characters."""
    if _CONTROL.search(value or ""):
        raise ValidationError("This must be a single line of text, without line breaks or control characters.",
                              code="not_single_line")


def one_line(text: str) -> str:
    """``text`` with each run of control characters and spaces made one space, stripped."""
    return " ".join(_CONTROL.sub(" ", text).split())
