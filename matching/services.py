"""Writes for checks and match reports: submit, run, alert."""
from __future__ import annotations

import logging
import time

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from catalog.models import ApiKey, Collection, Organisation
from catalog.services import _delete_files
from matching.core.errors import ImageError
from matching.core.loading import LoadedImage, heavy_work, load_image
from matching.core.matcher import MatchOutcome
from matching.engine import Candidate, find_candidates
from matching.models import Check, Match
from matching.review import review_auto_resolve

log = logging.getLogger(__name__)

RESULT_TOP_K = 5


def check_submit(
    *,
    organisation: Organisation,
    data: bytes,
    loaded: LoadedImage,
    filename: str = "",
    collection: Collection | None = None,
    submitted_by: AbstractBaseUser | None = None,
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
    check.file.save(filename or f"check.{loaded.format.lower()}", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            check.save()
            from workers.tasks import run_check

            check_id = check.pk
            transaction.on_commit(lambda: run_check.delay(check_id))
    except BaseException:
        _delete_files([check.file.name])
        raise
    return check


def _partial_mode() -> str:
    from matching.engine import cnn_enabled

    return settings.IMGPROTECT_PARTIAL_SEARCH if cnn_enabled() else "off"


def _load_check_image(check: Check) -> LoadedImage:
    with default_storage.open(check.file.name, "rb") as fh:
        data = fh.read()
    return _load(data)


def _load(data: bytes) -> LoadedImage:
    return load_image(data, max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES, max_pixels=settings.IMGPROTECT_MAX_PIXELS,
                      max_side=settings.IMGPROTECT_WORK_MAX_SIDE, max_decode_bytes=settings.IMGPROTECT_MAX_DECODE_BYTES)


def check_run(*, check_id: int) -> Check | None:
    """Match a queued check and write its match reports. Idempotent.

    Only the delivery that moves the check from queued to running does the
    work (STYLE.md habit 3). Image errors are permanent: the check fails with
    the reason. Other errors put it back to queued and propagate for a retry.

    With ``IMGPROTECT_PARTIAL_SEARCH=background`` (the default) the check
    answers after the cheap passes (digests, hashes, CNN on the whole picture,
    verification): ``status`` becomes ``done``. When those found no copy,
    ``partial_search`` is ``pending`` and ``check_partial_run`` (its own task)
    runs the partial-copy pass and adds what it finds to the same check.
    """
    claimed = Check.objects.filter(pk=check_id, status=Check.Status.QUEUED).update(
        status=Check.Status.RUNNING, started=timezone.now()
    )
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
    _write_outcome(check, loaded, candidates, outcome, partial=partial, started=started)
    check.refresh_from_db()
    return check


def check_partial_run(*, check_id: int) -> Check | None:
    """The partial-copy pass of an answered check whose cheap passes found no copy. Idempotent.

    Claims ``pending -> running`` (one delivery does the work), runs the whole
    cascade again with the partial-copy pass (the cheap passes are
    deterministic and cost a tenth of it), adds the match reports it finds,
    replaces the check's result and sends alerts for the new matches. Other
    errors put it back to pending and propagate for a retry.
    """
    claimed = Check.objects.filter(pk=check_id, status=Check.Status.DONE,
                                   partial_search=Check.PartialSearch.PENDING).update(
        partial_search=Check.PartialSearch.RUNNING, partial_started=timezone.now()
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
    _write_outcome(check, loaded, candidates, outcome, partial=Check.PartialSearch.DONE, started=started,
                   extra={"answer_timings_ms": answer.get("timings_ms")})
    check.refresh_from_db()
    return check


def _write_outcome(check: Check, loaded: LoadedImage, candidates: list[Candidate], outcome: MatchOutcome, *,
                   partial: str, started: float, extra: dict[str, object] | None = None) -> None:
    """One transaction: the match reports (new ones with their evidence), the check's result and
    state, review auto-resolution; alerts, and the partial-copy task when pending, after commit."""
    check_id = check.pk
    positives = [c for c in candidates if c.decision.is_match]
    shown = positives + [c for c in candidates if not c.decision.is_match][: max(0, RESULT_TOP_K - len(positives))]
    signals = outcome.signals
    result = {
        "verdict": positives[0].decision.verdict if positives else "none",
        "match": bool(positives),
        "candidates": [c.as_json() for c in shown],
        "signals": {key: signals.get(key) for key in ("phash", "pdq", "pdq_quality", "sha256_pixels", "width",
                                                     "height")},
        "partial_search": partial,
        "notes": outcome.notes,
        "timings_ms": outcome.timings_ms,
        **(extra or {}),
    }
    known = set(Match.objects.filter(source_check=check).values_list("protected_image_id", flat=True))
    evidence = {c.image.pk: _render_evidence(loaded, c, outcome) for c in positives if c.image.pk not in known}
    now = timezone.now()
    with transaction.atomic():
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
            if created and evidence.get(c.image.pk):
                match.evidence.save("evidence.png", ContentFile(evidence[c.image.pk]), save=True)
        state: dict[str, object] = {"result": result, "partial_search": partial}
        if partial == Check.PartialSearch.PENDING:
            state.update(status=Check.Status.DONE, finished=now)
        elif check.status == Check.Status.RUNNING:  # one step: answered and complete
            state.update(status=Check.Status.DONE, finished=now, completed=now)
        else:  # the partial-copy pass of an answered check
            state.update(completed=now)
        Check.objects.filter(pk=check_id).update(**state)
        review_auto_resolve(matches=list(Match.objects.filter(source_check=check)))
        if positives:
            from workers.tasks import send_match_alerts

            transaction.on_commit(lambda: send_match_alerts.delay(check_id))
        if partial == Check.PartialSearch.PENDING:
            from workers.tasks import run_check_partial

            transaction.on_commit(lambda: run_check_partial.delay(check_id))
    log.info(
        "check %s %s: %s positives, partial-copy search %s, stages %s, total %.1f ms",
        check_id, "answered" if check.status == Check.Status.RUNNING else "partial-copy pass done", len(positives),
        partial or "-", result["timings_ms"], (time.perf_counter() - started) * 1000,
    )


def _render_evidence(loaded: LoadedImage, candidate: Candidate, outcome: MatchOutcome) -> bytes | None:
    """The side-by-side evidence PNG for one positive match (None when the reference cannot be read)."""
    from matching.core.evidence import render_evidence

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
