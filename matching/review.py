"""Review decisions on match reports: confirm, dismiss, mark licensed, reopen.

Every decision is written to the audit trail (``ReviewEvent``: who, when, from
which status to which, and a note). Two decisions outlive the match they were
made on:

- dismissing records a ``DismissedPair`` (the suspect's digests or key plus the
  protected image), so the same pair never alerts again;
- marking licensed records a ``Licence`` (holder and source), so matches of that
  image from that source resolve as licensed, without an alert.

``review_auto_resolve`` applies both to freshly written matches, inside the
transaction that writes them and before alerts are queued.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from catalog.models import Organisation
from imgprotect.errors import NotFound, ServiceError
from matching.models import DismissedPair, Licence, Match, ReviewAction, ReviewEvent
from matching.webhooks import webhook_matches_reviewed

Review = Match.Review


class Decision:
    CONFIRM = "confirm"
    DISMISS = "dismiss"
    LICENSE = "license"
    REOPEN = "reopen"
    ALL = (CONFIRM, DISMISS, LICENSE, REOPEN)


_OUTCOME = {
    Decision.CONFIRM: (Review.CONFIRMED, ReviewAction.CONFIRMED),
    Decision.DISMISS: (Review.DISMISSED, ReviewAction.DISMISSED),
    Decision.LICENSE: (Review.LICENSED, ReviewAction.LICENSED),
    Decision.REOPEN: (Review.NEW, ReviewAction.REOPENED),
}


class MatchNotFound(NotFound):
    """A match id unknown in the caller's organisation."""


@dataclass(frozen=True)
class LicenceTerms:
    holder: str
    source: str = ""  # a domain ("example.com"), a URL or path prefix, or empty for any source


@dataclass(frozen=True)
class Suspect:
    """What identifies the suspect side of a match across checks and scans."""

    sha256: str
    sha256_pixels: str
    key: str
    source: str  # where it was found: the check's recorded origin, or the scan's key


def suspect_of(match: Match) -> Suspect:
    check = match.source_check
    if check is None:
        return Suspect("", "", match.suspect_key, match.suspect_key)
    pixels = ((check.result or {}).get("signals") or {}).get("sha256_pixels", "")
    # A missing reverse one-to-one raises a subclass of AttributeError, so getattr's default applies.
    origin = getattr(check, "origin", None)
    return Suspect(check.sha256_bytes, pixels, match.suspect_key, origin.source if origin else match.suspect_key)


def source_host(value: str) -> str:
    value = value.strip().lower()
    if "://" in value:
        return urlsplit(value).hostname or ""
    return value.split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]


def source_covered(licence_source: str, suspect_source: str) -> bool:
    """Whether a licence's source covers where a suspect was found.

    Empty covers everything; a bare domain covers itself and its subdomains; a URL or
    path (anything with a slash) covers what starts with it.
    """
    wanted = licence_source.strip().lower()
    if not wanted:
        return True
    found = suspect_source.strip().lower()
    if not found:
        return False
    if "/" in wanted:
        return found.startswith(wanted)
    host = source_host(found)
    return host == wanted or host.endswith("." + wanted)


def _pair_matches(pair: DismissedPair, suspect: Suspect) -> bool:
    digests = {d for d in (suspect.sha256, suspect.sha256_pixels) if d}
    return bool(
        (pair.suspect_sha256 and pair.suspect_sha256 in digests)
        or (pair.suspect_sha256_pixels and pair.suspect_sha256_pixels in digests)
        or (pair.suspect_key and not pair.suspect_sha256 and pair.suspect_key == suspect.key)
    )


def _record(match: Match, *, action: str, from_status: str, actor: User | None, note: str) -> ReviewEvent:
    return ReviewEvent.objects.create(
        organisation_id=match.organisation_id, match=match, action=action, from_status=from_status,
        to_status=match.review_status, actor=actor if actor is not None and actor.is_authenticated else None,
        note=note,
    )


@transaction.atomic
def match_review(
    *,
    organisation: Organisation,
    match_ids: Sequence[int],
    decision: str,
    actor: User | None,
    note: str = "",
    licence: LicenceTerms | None = None,
) -> list[Match]:
    """Apply one decision to one or more matches of ``organisation`` (bulk actions pass many ids).

    Foreign or unknown ids raise ``MatchNotFound`` and change nothing. Other new
    matches covered by the decision (the same dismissed pair, the same licence)
    are resolved too.
    """
    if decision not in Decision.ALL:
        raise ServiceError(f"Unknown review decision {decision!r}.", code="invalid_decision")
    ids = sorted({int(i) for i in match_ids})
    if not ids:
        raise ServiceError("Select at least one match.", code="nothing_selected")
    if decision == Decision.LICENSE:
        if licence is None or not licence.holder.strip():
            raise ServiceError("Say who holds the licence.", code="licence_holder_required")
        licence = LicenceTerms(holder=licence.holder.strip()[:200], source=licence.source.strip()[:500])
    matches = list(
        # of=self: PostgreSQL cannot lock the nullable side of the outer joins select_related adds.
        Match.objects.select_for_update(of=("self",))
        .filter(organisation=organisation, pk__in=ids)
        .select_related("source_check__origin", "protected_image")
    )
    if len(matches) != len(ids):
        raise MatchNotFound("No such match in your organisation.")
    to_status, action = _OUTCOME[decision]
    now = timezone.now()
    note = note.strip()[:2000]
    events: list[ReviewEvent] = []
    touched_images: set[int] = set()
    for match in matches:
        from_status = match.review_status
        suspect = suspect_of(match)
        match.review_status = to_status
        match.reviewed_by = actor if actor is not None and actor.is_authenticated else None
        match.reviewed = now
        match.save(update_fields=["review_status", "reviewed_by", "reviewed"])
        event_note = note
        if match.protected_image_id is None:
            pass  # a hash-list match: no protected image for a dismissed pair or a licence to name
        elif decision == Decision.DISMISS:
            _dismiss_pair(match, suspect, actor)
        elif decision in (Decision.CONFIRM, Decision.REOPEN):
            # A pair judged a copy after all must be able to alert again.
            for pair in DismissedPair.objects.filter(protected_image_id=match.protected_image_id):
                if _pair_matches(pair, suspect):
                    pair.delete()
        elif decision == Decision.LICENSE and licence is not None:
            _licence_for(match, licence, actor)
            event_note = (f"Licensed to {licence.holder} ({licence.source or 'any source'})."
                          + (f" {note}" if note else ""))
        events.append(_record(match, action=action, from_status=from_status, actor=actor, note=event_note))
        if match.protected_image_id is not None:
            touched_images.add(match.protected_image_id)
    if decision in (Decision.DISMISS, Decision.LICENSE):
        review_auto_resolve(matches=list(
            Match.objects.filter(organisation=organisation, review_status=Review.NEW,
                                 protected_image_id__in=touched_images).exclude(pk__in=ids)
        ))
    webhook_matches_reviewed(events=events)
    return matches


def _dismiss_pair(match: Match, suspect: Suspect, actor: User | None) -> None:
    if not (suspect.sha256 or suspect.sha256_pixels or suspect.key):
        return  # nothing identifies the suspect; only this match is dismissed
    DismissedPair.objects.get_or_create(
        organisation_id=match.organisation_id, protected_image_id=match.protected_image_id,
        suspect_sha256=suspect.sha256, suspect_sha256_pixels=suspect.sha256_pixels,
        suspect_key="" if suspect.sha256 else suspect.key,
        defaults={"origin_match": match,
                  "dismissed_by": actor if actor is not None and actor.is_authenticated else None},
    )


def _licence_for(match: Match, terms: LicenceTerms, actor: User | None) -> Licence:
    assert match.protected_image_id is not None  # match_review never licenses a hash-list match
    existing = Licence.objects.filter(
        protected_image_id=match.protected_image_id, holder=terms.holder, source=terms.source, revoked__isnull=True
    ).first()
    return existing or Licence.objects.create(
        organisation_id=match.organisation_id, protected_image_id=match.protected_image_id, holder=terms.holder,
        source=terms.source, origin_match=match,
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )


def review_auto_resolve(*, matches: list[Match]) -> None:
    """Apply earlier decisions to freshly written matches: dismissed pairs and licences.

    Called inside the transaction that writes the matches, before alerts are
    queued; only matches still ``new`` are considered. A resolved match is
    no longer new, so no e-mail, digest or ``match.created`` webhook mentions it.
    The given instances are updated in place.
    """
    fresh = {m.pk: m for m in matches if m.pk is not None and m.review_status == Review.NEW}
    if not fresh:
        return
    # A hash-list match has no protected image, so no dismissed pair or licence applies to it.
    rows = list(Match.objects.filter(pk__in=fresh, review_status=Review.NEW, protected_image__isnull=False)
                .select_related("source_check__origin"))
    image_ids = {r.protected_image_id for r in rows if r.protected_image_id is not None}
    pairs: dict[int, list[DismissedPair]] = defaultdict(list)
    for dismissed in DismissedPair.objects.filter(protected_image_id__in=image_ids).select_related("dismissed_by"):
        pairs[dismissed.protected_image_id].append(dismissed)
    licences: dict[int, list[Licence]] = defaultdict(list)
    for licence in Licence.objects.filter(protected_image_id__in=image_ids, revoked__isnull=True).order_by("created"):
        licences[licence.protected_image_id].append(licence)
    if not pairs and not licences:
        return
    now = timezone.now()
    for row in rows:
        suspect = suspect_of(row)
        image_id = row.protected_image_id or 0
        pair = next((p for p in pairs.get(image_id, []) if _pair_matches(p, suspect)), None)
        lic = None if pair else next(
            (lic for lic in licences.get(image_id, []) if source_covered(lic.source, suspect.source)),
            None,
        )
        if pair is None and lic is None:
            continue
        status, action = (Review.DISMISSED, ReviewAction.AUTO_DISMISSED) if pair else (
            Review.LICENSED, ReviewAction.AUTO_LICENSED)
        if not Match.objects.filter(pk=row.pk, review_status=Review.NEW).update(review_status=status, reviewed=now):
            continue
        row.review_status = status
        fresh[row.pk].review_status = status
        fresh[row.pk].reviewed = now
        if pair is not None:
            who = pair.dismissed_by.get_username() if pair.dismissed_by else "a reviewer"
            note = f"The same pair was dismissed by {who} on {pair.created:%Y-%m-%d}."
        else:
            assert lic is not None
            note = f"Licensed to {lic.holder} ({lic.source or 'any source'}), licence #{lic.pk}."
        _record(row, action=action, from_status=Review.NEW, actor=None, note=note)


# --- standing decisions, revoked or deleted in the settings -------------------------------------

def licence_revoke(*, licence: Licence) -> None:
    Licence.objects.filter(pk=licence.pk, revoked__isnull=True).update(revoked=timezone.now())


def dismissed_pair_delete(*, pair: DismissedPair) -> None:
    pair.delete()
