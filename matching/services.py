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
from matching.core.loading import LoadedImage, load_image
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


def check_run(*, check_id: int) -> Check | None:
    """Match a queued check and write its match reports. Idempotent.

    Only the delivery that moves the check from queued to running does the
    work (STYLE.md habit 3). Image errors are permanent: the check fails with
    the reason. Other errors put it back to queued and propagate for a retry.
    """
    claimed = Check.objects.filter(pk=check_id, status=Check.Status.QUEUED).update(
        status=Check.Status.RUNNING, started=timezone.now()
    )
    if not claimed:
        return Check.objects.filter(pk=check_id).first()
    check = Check.objects.select_related("organisation").get(pk=check_id)
    started = time.perf_counter()
    try:
        with default_storage.open(check.file.name, "rb") as fh:
            data = fh.read()
        loaded = load_image(data, max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES,
                            max_pixels=settings.IMGPROTECT_MAX_PIXELS)
        candidates, outcome = find_candidates(
            organisation_id=check.organisation_id, loaded=loaded, collection_id=check.collection_id,
            top_k=RESULT_TOP_K,
        )
    except ImageError as exc:
        Check.objects.filter(pk=check_id).update(
            status=Check.Status.FAILED, failure_code=exc.code, failure_reason=exc.reason, finished=timezone.now()
        )
        raise
    except BaseException:
        Check.objects.filter(pk=check_id, status=Check.Status.RUNNING).update(status=Check.Status.QUEUED)
        raise
    positives = [c for c in candidates if c.decision.is_match]
    shown = positives + [c for c in candidates if not c.decision.is_match][: max(0, RESULT_TOP_K - len(positives))]
    signals = outcome.signals
    result = {
        "verdict": positives[0].decision.verdict if positives else "none",
        "match": bool(positives),
        "candidates": [c.as_json() for c in shown],
        "signals": {key: signals.get(key) for key in ("phash", "pdq", "pdq_quality", "sha256_pixels", "width",
                                                     "height")},
        "notes": outcome.notes,
        "timings_ms": outcome.timings_ms,
    }
    evidence = {c.image.pk: _render_evidence(loaded, c, outcome) for c in positives}
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
        Check.objects.filter(pk=check_id).update(status=Check.Status.DONE, result=result, finished=timezone.now())
        new_matches = list(Match.objects.filter(source_check=check))
        review_auto_resolve(matches=new_matches)
        if positives:
            from workers.tasks import send_match_alerts

            transaction.on_commit(lambda: send_match_alerts.delay(check_id))
    log.info(
        "check %s done: %s positives, stages %s, total %.1f ms",
        check_id, len(positives), result["timings_ms"], (time.perf_counter() - started) * 1000,
    )
    check.refresh_from_db()
    return check


def _render_evidence(loaded: LoadedImage, candidate: Candidate, outcome: MatchOutcome) -> bytes | None:
    """The side-by-side evidence PNG for one positive match (None when the reference cannot be read)."""
    from matching.core.evidence import render_evidence

    try:
        with default_storage.open(candidate.image.file.name, "rb") as fh:
            reference = load_image(fh.read(), max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES,
                                   max_pixels=settings.IMGPROTECT_MAX_PIXELS)
    except (ImageError, OSError) as exc:
        log.warning("no evidence for protected image %s: %s", candidate.image.pk, exc)
        return None
    decision = candidate.decision
    title = f"{decision.verdict.replace('_', ' ')} · score {decision.score:.2f} · {candidate.image.key}"
    return render_evidence(loaded.image, reference.image, outcome.verifications.get(candidate.image.pk),
                           title=title)
