"""Writes for checks and match reports: submit, run, alert."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from catalog.files import extension_for
from catalog.models import ApiKey, Collection, Organisation, ProtectedImage
from catalog.deletion import stored_files_delete
from imgprotect.dispatch import enqueue_on_commit
from matching.core.errors import ImageError
from matching.core.evidence import render_evidence
from matching.core.loading import LoadedImage, heavy_work, load_image
from matching.core.matcher import MatchOutcome
from matching.engine import Candidate, cnn_enabled, find_candidates
from matching.cases import cases_attach
from matching.hashlists import HashListHit, hash_list_hits
from matching.models import Check, HashListEntry, Match, Verdict
from matching.review import review_auto_resolve
from matching.suspects import suspect_signals_keep

log = logging.getLogger(__name__)

RESULT_TOP_K = 5


def check_submit(
    *,
    organisation: Organisation,
    data: bytes,
    loaded: LoadedImage,
    filename: str = "",
    collection: Collection | None = None,
    submitted_by: User | None = None,
    api_key: ApiKey | None = None,
) -> Check:
    """Store a validated suspect image and queue its matching (after commit)."""
    if collection is not None and collection.organisation_id != organisation.pk:
        raise ValueError("collection belongs to another organisation")
    check = Check(
        organisation=organisation,
        collection=collection,
        original_name=filename[:255],
        sha256_bytes=loaded.sha256_bytes,
        submitted_by=submitted_by if submitted_by is not None and submitted_by.is_authenticated else None,
        api_key=api_key,
    )
    # The stored name comes from the decoded format; the uploader's name is only shown (original_name).
    check.file.save(f"check.{extension_for(loaded.format)}", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            check.save()
            enqueue_on_commit("workers.tasks.run_check", check.pk)
    except BaseException:
        stored_files_delete([check.file.name])
        raise
    return check


def _partial_mode() -> str:
    return settings.IMGPROTECT_PARTIAL_SEARCH if cnn_enabled() else "off"


def _load_check_image(check: Check) -> LoadedImage:
    with default_storage.open(check.file.name, "rb") as fh:
        data = fh.read()
    return _load(data)


def _load(data: bytes) -> LoadedImage:
    return load_image(data, max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES, max_pixels=settings.IMGPROTECT_MAX_PIXELS,
                      max_side=settings.IMGPROTECT_WORK_MAX_SIDE, max_decode_bytes=settings.IMGPROTECT_MAX_DECODE_BYTES)


def stale_before() -> datetime:
    """Work claimed before this lost its worker: no live attempt runs past the hard time limit,
    which IMGPROTECT_STALE_AFTER_SECONDS exceeds (imgprotect/settings.py)."""
    return timezone.now() - timedelta(seconds=settings.IMGPROTECT_STALE_AFTER_SECONDS)


def check_run(*, check_id: int) -> Check | None:
    """Match a queued check and write its match reports. Idempotent.

    Only the delivery that moves the check from queued to running does the
    work (docs/coding-habits.md, habit 3), or one that takes over a check whose attempt
    died with its worker (running past ``stale_before``). Image errors are permanent: the check fails with
    the reason. Other errors put it back to queued and propagate for a retry.

    With ``IMGPROTECT_PARTIAL_SEARCH=background`` (the default) the check
    answers after the cheap passes (digests, hashes, CNN on the whole picture,
    verification): ``status`` becomes ``done``. When those found no copy,
    ``partial_search`` is ``pending`` and ``check_partial_run`` (its own task)
    runs the partial-copy pass and adds what it finds to the same check.
    """
    running = Check.Status.RUNNING
    claimed = Check.objects.filter(pk=check_id, status=Check.Status.QUEUED).update(
        status=running, started=timezone.now()
    ) or Check.objects.filter(pk=check_id, status=running, started__lt=stale_before(), attempts__lt=3).update(
        started=timezone.now(), attempts=F("attempts") + 1
    )  # or a redelivery takes over a dead attempt (docs/architecture.md, "When a worker dies")
    if not claimed:
        return Check.objects.filter(pk=check_id).first()
    check = Check.objects.select_related("organisation").get(pk=check_id)
    started = time.perf_counter()
    mode = _partial_mode()
    try:
        with heavy_work(settings.IMGPROTECT_HEAVY_WORK_SLOTS):
            loaded = _load_check_image(check)
            candidates, outcome = find_candidates(
                organisation_id=check.organisation_id, loaded=loaded, collection_id=check.collection_id,
                top_k=RESULT_TOP_K, partial={"inline": "auto", "background": "never", "off": "never"}[mode],
            )
    except ImageError as exc:
        Check.objects.filter(pk=check_id).update(
            status=Check.Status.FAILED, failure_code=exc.code, failure_reason=exc.reason, finished=timezone.now()
        )
        raise
    except BaseException:
        Check.objects.filter(pk=check_id, status=Check.Status.RUNNING).update(status=Check.Status.QUEUED)
        raise
    if mode == "background" and not any(c.decision.is_match for c in candidates):
        partial = Check.PartialSearch.PENDING
    elif "cnn_tiles_ms" in outcome.timings_ms:  # inline, and the cheap passes found nothing
        partial = Check.PartialSearch.DONE
    else:
        partial = Check.PartialSearch.SKIPPED
    try:
        _write_outcome(check, loaded, candidates, outcome, partial=partial, started=started)
    except BaseException:  # never left running for the sweeper: back to queued for the retry
        Check.objects.filter(pk=check_id, status=Check.Status.RUNNING).update(status=Check.Status.QUEUED)
        raise
    _keep_suspect(check, outcome, loaded)
    check.refresh_from_db()
    return check


def _keep_suspect(check: Check, outcome: MatchOutcome, loaded: LoadedImage) -> None:
    """Keep the suspect's signals for retroactive re-checks (matching/retro.py). The check's answer
    is written already: a failure here only costs a later re-check this suspect."""
    try:
        suspect_signals_keep(check=check, outcome=outcome, loaded=loaded)
    except Exception:  # noqa: BLE001 - logged; the check itself succeeded
        log.exception("check %s: signals not kept for re-checks", check.pk)


def check_partial_run(*, check_id: int) -> Check | None:
    """The partial-copy pass of an answered check whose cheap passes found no copy. Idempotent.

    Claims ``pending -> running`` (one delivery does the work), runs the whole
    cascade again with the partial-copy pass (the cheap passes are
    deterministic and cost a tenth of it), adds the match reports it finds,
    replaces the check's result and sends alerts for the new matches. Other
    errors put it back to pending and propagate for a retry.
    """
    running = Check.PartialSearch.RUNNING
    answered = Check.objects.filter(pk=check_id, status=Check.Status.DONE)
    claimed = answered.filter(partial_search=Check.PartialSearch.PENDING).update(
        partial_search=running, partial_started=timezone.now()
    ) or answered.filter(partial_search=running, partial_started__lt=stale_before(), attempts__lt=3).update(
        partial_started=timezone.now(), attempts=F("attempts") + 1
    )
    if not claimed:
        return Check.objects.filter(pk=check_id).first()
    check = Check.objects.select_related("organisation").get(pk=check_id)
    started = time.perf_counter()
    try:
        with heavy_work(settings.IMGPROTECT_HEAVY_WORK_SLOTS):
            loaded = _load_check_image(check)
            candidates, outcome = find_candidates(
                organisation_id=check.organisation_id, loaded=loaded, collection_id=check.collection_id,
                top_k=RESULT_TOP_K, partial="auto",
            )
    except ImageError as exc:  # it decoded a moment ago: the stored file changed under us
        Check.objects.filter(pk=check_id).update(partial_search=Check.PartialSearch.FAILED,
                                                 completed=timezone.now())
        log.warning("partial-copy search of check %s failed: %s", check_id, exc.reason)
        return Check.objects.filter(pk=check_id).first()
    except BaseException:
        Check.objects.filter(pk=check_id, partial_search=Check.PartialSearch.RUNNING).update(
            partial_search=Check.PartialSearch.PENDING)
        raise
    answer = check.result or {}
    try:
        _write_outcome(check, loaded, candidates, outcome, partial=Check.PartialSearch.DONE, started=started,
                       extra={"answer_timings_ms": answer.get("timings_ms")})
    except BaseException:
        Check.objects.filter(pk=check_id, partial_search=Check.PartialSearch.RUNNING).update(
            partial_search=Check.PartialSearch.PENDING)
        raise
    _keep_suspect(check, outcome, loaded)
    check.refresh_from_db()
    return check


def _write_outcome(check: Check, loaded: LoadedImage, candidates: list[Candidate], outcome: MatchOutcome, *,
                   partial: str, started: float, extra: dict[str, object] | None = None) -> None:
    """One transaction: the match reports (new ones with their evidence), the check's result and
    state, review auto-resolution; alerts, and the partial-copy task when pending, after commit.

    A protected image deleted between the search and this write is left out: the check finishes
    with the remaining candidates instead of failing on the vanished row.
    """
    known = set(Match.objects.filter(source_check=check).values_list("protected_image_id", flat=True))
    evidence = {c.image.pk: _render_evidence(loaded, c, outcome) for c in candidates
                if c.decision.is_match and c.image.pk not in known}
    # The organisation's imported hash lists: a step of its own, beside the cascade; a check limited to one
    # collection leaves them out (docs/hash-exchange.md).
    hits = (hash_list_hits(organisation_id=check.organisation_id, signals=outcome.signals)
            if check.collection_id is None else [])
    for attempt in range(1, _WRITE_ATTEMPTS + 1):
        written: list[str] = []  # evidence files of this attempt, removed if it rolls back
        try:
            positives = _write_once(check, candidates, outcome, evidence, written, partial=partial, extra=extra,
                                    hits=hits)
            break
        except IntegrityError:
            # The image went between our existence check and the commit (a database that cannot lock
            # rows for update): look again, without it.
            stored_files_delete(written)
            if attempt == _WRITE_ATTEMPTS:
                raise
            log.info("check %s: a candidate was deleted while writing; writing again", check.pk)
        except BaseException:
            stored_files_delete(written)
            raise
    log.info(
        "check %s %s: %s positives, partial-copy search %s, stages %s, total %.1f ms",
        check.pk, "answered" if check.status == Check.Status.RUNNING else "partial-copy pass done", len(positives),
        partial or "-", outcome.timings_ms, (time.perf_counter() - started) * 1000,
    )


_WRITE_ATTEMPTS = 3


def _write_once(check: Check, candidates: list[Candidate], outcome: MatchOutcome, evidence: dict[int, bytes | None],
                written: list[str], *, partial: str, extra: dict[str, object] | None,
                hits: list[HashListHit]) -> list[Candidate]:
    check_id = check.pk
    now = timezone.now()
    with transaction.atomic():
        # Locks the candidates' rows (PostgreSQL) so none can be deleted before this commits; an image
        # deleted since the search is dropped from the answer.
        alive = set(ProtectedImage.objects.select_for_update().filter(pk__in=[c.image.pk for c in candidates])
                    .values_list("pk", flat=True))
        candidates = [c for c in candidates if c.image.pk in alive]
        listed = set(HashListEntry.objects.select_for_update().filter(pk__in=[h.entry.pk for h in hits])
                     .values_list("pk", flat=True))
        hits = [h for h in hits if h.entry.pk in listed]  # a list deleted since the search is left out
        positives = [c for c in candidates if c.decision.is_match]
        shown = positives + [c for c in candidates if not c.decision.is_match][: max(0, RESULT_TOP_K - len(positives))]
        signals = outcome.signals
        result = {
            "verdict": positives[0].decision.verdict if positives else Verdict.HASH_LIST.value if hits else "none",
            "match": bool(positives or hits),
            "candidates": [c.as_json() for c in shown],
            "hash_list_matches": [h.as_json() for h in hits],
            "signals": {key: signals.get(key) for key in ("phash", "pdq", "pdq_quality", "sha256_pixels", "width",
                                                         "height")},
            "partial_search": partial,
            "notes": outcome.notes,
            "timings_ms": outcome.timings_ms,
            **(extra or {}),
        }
        for c in positives:
            match, created = Match.objects.get_or_create(
                source_check=check,
                protected_image=c.image,
                defaults={
                    "organisation_id": check.organisation_id,
                    "score": c.decision.score,
                    "verdict": c.decision.verdict,
                    "signal_scores": c.decision.signal_scores,
                    "region": c.decision.region,
                    "edit_report": c.decision.edit,
                },
            )
            if created and (png := evidence.get(c.image.pk)):
                match.evidence.save("evidence.png", ContentFile(png), save=True)
                written.append(match.evidence.name)
        for hit in hits:  # no reference picture: the evidence is the query, the list and the distance
            Match.objects.get_or_create(
                source_check=check, hash_list_entry=hit.entry,
                defaults={"organisation_id": check.organisation_id, "score": hit.score,
                          "verdict": Verdict.HASH_LIST, "signal_scores": hit.signal_scores()},
            )
        state: dict[str, object] = {"result": result, "partial_search": partial}
        if partial == Check.PartialSearch.PENDING:
            state.update(status=Check.Status.DONE, finished=now)
        elif check.status == Check.Status.RUNNING:  # one step: answered and complete
            state.update(status=Check.Status.DONE, finished=now, completed=now)
        else:  # the partial-copy pass of an answered check
            state.update(completed=now)
        Check.objects.filter(pk=check_id).update(**state)
        written_matches = list(Match.objects.filter(source_check=check))
        review_auto_resolve(matches=written_matches)
        cases_attach(matches=written_matches)  # the case of the site the suspect was found on
        if positives or hits:
            enqueue_on_commit("workers.tasks.send_match_alerts", check_id)
        if partial == Check.PartialSearch.PENDING:
            enqueue_on_commit("workers.tasks.run_check_partial", check_id)
    return positives


def _render_evidence(loaded: LoadedImage, candidate: Candidate, outcome: MatchOutcome) -> bytes | None:
    """The side-by-side evidence PNG for one positive match (None when the reference cannot be read)."""
    try:
        with default_storage.open(candidate.image.file.name, "rb") as fh, \
                heavy_work(settings.IMGPROTECT_HEAVY_WORK_SLOTS):
            reference = _load(fh.read())
    except (ImageError, OSError) as exc:
        log.warning("no evidence for protected image %s: %s", candidate.image.pk, exc)
        return None
    decision = candidate.decision
    title = f"{decision.verdict.replace('_', ' ')} · score {decision.score:.2f} · {candidate.image.key}"
    # Coordinates are in the pictures' own pixels; the images are the reduced working copies.
    return render_evidence(loaded.image, reference.image, outcome.verifications.get(candidate.image.pk),
                           query_frame=(loaded.width, loaded.height),
                           reference_frame=(reference.width, reference.height), title=title)


def check_image_load(check: Check) -> LoadedImage:
    """A check's stored upload, decoded under the upload limits (retroactive re-checks verify with it)."""
    return _load_check_image(check)


def match_evidence_render(loaded: LoadedImage, candidate: Candidate, outcome: MatchOutcome) -> bytes | None:
    """The evidence PNG of a positive decision, as a check draws it."""
    return _render_evidence(loaded, candidate, outcome)
