"""Template helpers for the portal: badges and small formatting."""
from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html

from matching.models import Match, Verdict
from matching.portal.presentation import STATUS_TONE, VERDICT_TONE

register = template.Library()

VERDICT_LABELS = dict(Verdict.choices)
STATUS_LABELS = {**dict(Match.Review.choices), "new": "To review"}


@register.simple_tag
def verdict_badge(verdict: str) -> str:
    return format_html('<span class="badge {}"><span class="dot"></span>{}</span>',
                       VERDICT_TONE.get(verdict, "muted"), VERDICT_LABELS.get(verdict, verdict))


@register.simple_tag
def status_badge(status: str) -> str:
    return format_html('<span class="badge {}">{}</span>', STATUS_TONE.get(status, "muted"),
                       STATUS_LABELS.get(status, status))


@register.filter
def percent(value: Any) -> str:
    try:
        return f"{round(float(value) * 100)} %"
    except (TypeError, ValueError):
        return "—"


@register.filter
def bar_width(value: Any) -> str:
    try:
        return f"{max(0.0, min(1.0, float(value))) * 100:.1f}%"
    except (TypeError, ValueError):
        return "0%"


@register.filter
def share(count: int, total: int) -> str:
    return f"{(count / total * 100) if total else 0:.1f}%"


# Small stroke icons drawn inline (no icon font, no emoji font needed on the client).
_ICONS = {
    "search": '<circle cx="11" cy="11" r="7"/><line x1="16.5" y1="16.5" x2="21" y2="21"/>',
    "ok": '<circle cx="12" cy="12" r="9"/><polyline points="8 12.5 11 15.5 16.5 9"/>',
    "alert": '<path d="M12 3 2 20h20L12 3z"/><line x1="12" y1="10" x2="12" y2="14"/><line x1="12" y1="17" x2="12" y2="17.01"/>',
    "folder": '<path d="M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z"/>',
    "image": '<rect x="3" y="4" width="18" height="16" rx="2"/><circle cx="9" cy="10" r="2"/><polyline points="21 17 15 11 5 20"/>',
    "lock": '<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>',
    "inbox": '<polyline points="3 13 8 13 10 16 14 16 16 13 21 13"/><path d="M5 5h14l2 8v6H3v-6z"/>',
    "link": '<path d="M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1"/><path d="M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1"/>',
    "upload": '<path d="M4 16v3a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-3"/><polyline points="7 9 12 4 17 9"/><line x1="12" y1="4" x2="12" y2="16"/>',
    "ban": '<circle cx="12" cy="12" r="9"/><line x1="5.6" y1="5.6" x2="18.4" y2="18.4"/>',
    "copy": '<rect x="8" y="8" width="12" height="12" rx="2"/><path d="M16 8V6a2 2 0 0 0-2-2H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h2"/>',
}


@register.simple_tag
def icon(name: str, size: int = 24) -> str:
    from django.utils.safestring import mark_safe

    body = _ICONS.get(name, "")
    return mark_safe(  # noqa: S308 - fixed markup from the table above, no user input
        f'<svg class="icon" width="{int(size)}" height="{int(size)}" viewBox="0 0 24 24" fill="none" '
        f'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" '
        f'aria-hidden="true">{body}</svg>')
