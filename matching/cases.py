"""Cases: the matches of one organisation whose suspects came from the same source, worked as one.

A match's source is the site its suspect was found on, the host of the check's "found at"
(``CheckOrigin``, recorded when a check is submitted in the portal), normalised: lower-case,
``www.`` dropped, international names in their ASCII (IDNA) form; or, for a bulk scan, the scan's
source prefix (``s3://bucket/crawl``, a directory). A match with neither (a check submitted without
"found at", through the API for instance) joins no case.

``cases_attach`` runs inside the transaction that writes matches (``matching.services`` for checks,
``matching.bulk.load`` for scans), after the review auto-resolution, so a case never misses a match
and a rolled-back write leaves no case behind. ``cases_backfill`` (the ``cases_backfill`` command)
does the same for matches written before cases existed. Every change is a ``CaseEvent``: who, what,
when, and a note (docs/cases.md).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, F, Max, Q, QuerySet
from django.utils import timezone

from catalog.models import Membership, Organisation
from imgprotect.errors import NotFound, ServiceError
from matching.bulk.models import BulkJob
from matching.models import Case, CaseEvent, CheckOrigin, Match
from matching.review import source_host

Status = Case.Status
Action = CaseEvent.Action

MAX_SOURCE = 1024
_REOPEN_FROM = (Status.RESOLVED, Status.LICENSED)  # a notice sent is still waiting for its answer


class CaseNotFound(NotFound):
    """A case id unknown in the caller's organisation."""


# --- sources ------------------------------------------------------------------------------------

def site_of(found_at: str) -> str:
    """The normalised host of where a suspect was found ("" when there is none).

    ``https://WWW.Example.com/a.jpg``, ``example.com/gallery`` and ``www.example.com`` are all
    ``example.com``; ``bücher.de`` is ``xn--bcher-kva.de``.
    """
    host = source_host(found_at or "").strip().strip(".")
    if host.startswith("www."):
        host = host[4:]
    if not host or any(ch.isspace() for ch in host):
        return ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:  # a label too long or empty: kept as typed, still one source
        pass
    return host[:MAX_SOURCE]


def scan_prefix(source: str) -> str:
    """A bulk scan's source as a case's source: the prefix its suspect keys start with."""
    return source.strip().rstrip("/")[:MAX_SOURCE]


@dataclass(frozen=True)
class SourceKey:
    kind: str
    source: str


def _sources(matches: Sequence[Match], scan_source: str | None) -> dict[int, SourceKey]:
    """Match id -> its case's source, for the matches whose source is known."""
    check_ids = {m.source_check_id for m in matches if m.source_check_id}
    origins = dict(CheckOrigin.objects.filter(source_check_id__in=check_ids).values_list("source_check_id", "source"))
    out: dict[int, SourceKey] = {}
    for match in matches:
        if match.source_check_id:
            site = site_of(origins.get(match.source_check_id, ""))
            if site:
                out[match.pk] = SourceKey(Case.Kind.SITE, site)
        elif scan_source and (prefix := scan_prefix(scan_source)):
            out[match.pk] = SourceKey(Case.Kind.SCAN, prefix)
    return out


# --- writes -------------------------------------------------------------------------------------

def _actor(user: User | None) -> User | None:
    return user if user is not None and user.is_authenticated else None


def _event(case: Case, action: str, *, actor: User | None = None, note: str = "", from_status: str = "",
           to_status: str = "") -> CaseEvent:
    return CaseEvent.objects.create(organisation_id=case.organisation_id, case=case, action=action,
                                    from_status=from_status, to_status=to_status or case.status,
                                    actor=_actor(actor), note=note)


def cases_attach(*, matches: Iterable[Match], scan_source: str | None = None) -> list[Case]:
    """Put freshly written matches into the case of their source, opening it when new.

    Call inside the transaction that writes them. Matches already in a case, and matches whose
    source is unknown, are left alone. A resolved or licensed case that receives a match still to
    review opens again. Returns the cases touched.
    """
    fresh = [m for m in matches if m.pk is not None and m.case_id is None]
    if not fresh:
        return []
    keys = _sources(fresh, scan_source)
    groups: dict[tuple[int, SourceKey], list[Match]] = defaultdict(list)
    for match in fresh:
        if match.pk in keys:
            groups[(match.organisation_id, keys[match.pk])].append(match)
    now = timezone.now()
    touched = []
    for (organisation_id, key), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1].source)):
        case, created = Case.objects.get_or_create(organisation_id=organisation_id, kind=key.kind, source=key.source)
        # Locked, so two writers adding to one case serialise their status decisions.
        case = Case.objects.select_for_update().get(pk=case.pk)
        if created:
            _event(case, Action.OPENED, note=f"Opened for {case.get_kind_display().lower()} {case.source}.")
        ids = [m.pk for m in members]
        added = Match.objects.filter(pk__in=ids, case__isnull=True).update(case=case)
        if not added:
            continue
        for m in members:
            m.case = case
        _event(case, Action.MATCHES_ADDED,
               note=f"{added} match{'es' if added != 1 else ''} added: " + ", ".join(f"#{i}" for i in ids) + ".")
        fields = ["last_match", "updated"]
        case.last_match = now
        if case.status in _REOPEN_FROM and Match.objects.filter(pk__in=ids, review_status=Match.Review.NEW).exists():
            from_status, case.status = case.status, Status.OPEN
            fields.append("status")
            _event(case, Action.REOPENED, from_status=from_status,
                   note="A new match from this source arrived after the case was closed.")
        case.save(update_fields=fields)
        touched.append(case)
    return touched


@transaction.atomic
def case_update(*, case: Case, actor: User | None, status: str | None = None, note: str = "",
                assignee: User | None = None, assign: bool = False) -> Case:
    """Change a case's status and/or assignee, or add a note; each change is one history event.

    ``assign=True`` sets the assignee to ``assignee`` (None unassigns); it must be a member of the
    case's organisation. A status equal to the current one is no change. Nothing to change and no
    note is refused.
    """
    if status is not None and status not in Status.values:
        raise ServiceError(f"Unknown case status {status!r}: one of {', '.join(Status.values)}.",
                           code="invalid_status")
    note = note.strip()[:2000]
    locked = Case.objects.select_for_update().get(pk=case.pk)
    if assign and assignee is not None and not Membership.objects.filter(
            organisation_id=locked.organisation_id, user=assignee).exists():
        raise ServiceError("The assignee must be a member of your organisation.", code="invalid_assignee")
    changed_status = status is not None and status != locked.status
    changed_assignee = assign and (assignee.pk if assignee else None) != locked.assignee_id
    if not (changed_status or changed_assignee or note):
        raise ServiceError("Nothing to change: give a new status, an assignee or a note.", code="nothing_to_change")
    if changed_assignee:
        locked.assignee = assignee
        who = assignee.get_username() if assignee else "nobody"
        _event(locked, Action.ASSIGNED, actor=actor, note=f"Assigned to {who}." + (
            f" {note}" if note and not changed_status else ""))
    if changed_status:
        assert status is not None
        from_status, locked.status = locked.status, status
        _event(locked, Action.STATUS, actor=actor, from_status=from_status, note=note)
    elif note and not changed_assignee:
        _event(locked, Action.NOTE, actor=actor, note=note)
    locked.save()
    return locked


def case_export_recorded(*, case: Case, actor: User | None, files: int) -> None:
    _event(case, Action.EXPORTED, actor=actor, note=f"Evidence package exported ({files} files).")


def cases_backfill(*, organisation: Organisation | None = None, batch: int = 2000) -> int:
    """Put matches written before cases existed into their cases; returns how many joined one.

    Idempotent: only matches in no case are looked at. Scan matches find their scan by the
    longest source prefix of the organisation's scan jobs that their suspect key starts with.
    """
    todo = Match.objects.filter(case__isnull=True).order_by("pk")
    if organisation is not None:
        todo = todo.filter(organisation=organisation)
    prefixes: dict[int, list[str]] = {}
    joined = 0
    last = 0
    while True:
        rows = list(todo.filter(pk__gt=last)[:batch])
        if not rows:
            return joined
        last = rows[-1].pk
        with transaction.atomic():
            checked = [m for m in rows if m.source_check_id]
            joined += _count(cases_attach(matches=checked), checked)
            by_prefix: dict[str, list[Match]] = defaultdict(list)
            for m in rows:
                if m.source_check_id:
                    continue
                if m.organisation_id not in prefixes:
                    sources = BulkJob.objects.filter(organisation_id=m.organisation_id, kind=BulkJob.Kind.SCAN)
                    prefixes[m.organisation_id] = sorted({scan_prefix(s) for s in sources.values_list(
                        "source", flat=True)}, key=len, reverse=True)
                prefix = next((p for p in prefixes[m.organisation_id] if m.suspect_key.startswith(p + "/")), None)
                if prefix:
                    by_prefix[prefix].append(m)
            for prefix, members in by_prefix.items():
                joined += _count(cases_attach(matches=members, scan_source=prefix), members)


def _count(cases: list[Case], matches: list[Match]) -> int:
    ids = {c.pk for c in cases}
    return sum(1 for m in matches if m.case_id in ids)


# --- reads --------------------------------------------------------------------------------------

_LATEST = F("latest_match").desc(nulls_last=True)  # a case whose matches were all deleted goes last
SORTS = {"latest": (_LATEST, "-id"), "matches": ("-match_count", _LATEST, "-id")}


def case_list(*, organisation: Organisation, status: str | Sequence[str] | None = None, kind: str = "",
              sort: str = "latest", search: str = "") -> QuerySet[Case]:
    """The organisation's cases with ``match_count``, ``to_review`` (matches still new) and
    ``latest_match`` (the newest match's time), sorted by ``SORTS[sort]``."""
    rows = Case.objects.filter(organisation=organisation).select_related("assignee")
    if status:
        rows = rows.filter(status__in=[status] if isinstance(status, str) else list(status))
    if kind:
        rows = rows.filter(kind=kind)
    if search.strip():
        rows = rows.filter(source__icontains=search.strip())
    rows = rows.annotate(match_count=Count("matches"), latest_match=Max("matches__created"),
                         to_review=Count("matches", filter=Q(matches__review_status=Match.Review.NEW)))
    return rows.order_by(*SORTS.get(sort, SORTS["latest"]))


def case_of(*, organisation: Organisation, pk: int) -> Case:
    case = case_list(organisation=organisation).filter(pk=pk).first()
    if case is None:
        raise CaseNotFound("No such case in your organisation.")
    return case


def case_matches(*, case: Case) -> QuerySet[Match]:
    return (Match.objects.filter(case=case, organisation_id=case.organisation_id)
            .select_related("protected_image__collection", "source_check__origin", "reviewed_by", "organisation")
            .order_by("-created", "-id"))


def case_history(*, case: Case) -> QuerySet[CaseEvent]:
    return CaseEvent.objects.filter(case=case).select_related("actor").order_by("created", "id")


def unsourced_match_count(*, organisation: Organisation) -> int:
    """Matches in no case: their suspect's source is unknown."""
    return Match.objects.filter(organisation=organisation, case__isnull=True).count()


def case_assignees(*, organisation: Organisation) -> QuerySet[User]:
    return User.objects.filter(memberships__organisation=organisation).order_by("username")

