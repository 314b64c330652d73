"""The evidence package for a confirmed match: a ZIP to attach to a takedown notice.

It holds both images as stored (byte for byte), the evidence PNG when the engine drew
one, ``report.json`` and ``report.txt`` (hashes and scores, the edit report, the
audit trail with who confirmed and when), and ``SHA256SUMS`` over every other file,
so a recipient can verify nothing was altered (``sha256sum -c SHA256SUMS``).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from catalog.files import extension_for, sniff_format
from imgprotect.errors import Conflict
from matching.models import Match, ReviewAction, ReviewEvent
from matching.portal.presentation import describe_edit_report, edit_report_facts, signal_rows


class NotConfirmed(Conflict):
    code = "not_confirmed"


def _read(name: str) -> bytes | None:
    if not name:
        return None
    try:
        with default_storage.open(name, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _who(user: User | None) -> dict[str, str] | None:
    if user is None:
        return None
    return {"username": user.get_username(), "email": getattr(user, "email", ""),
            "name": (user.get_full_name() if hasattr(user, "get_full_name") else "") or user.get_username()}


@transaction.atomic
def evidence_export(*, match: Match, actor: User) -> tuple[str, bytes]:
    """Build the ZIP (file name, bytes) and record the export in the audit trail."""
    if match.review_status != Match.Review.CONFIRMED:
        raise NotConfirmed("Evidence can be exported for confirmed infringements only.")
    now = timezone.now()
    files = match_evidence_files(match=match, actor=actor, now=now)
    sums = sha256sums(files)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in [*files.items(), ("SHA256SUMS", sums.encode())]:
            zip_write(archive, f"match-{match.pk}/{name}", data, now)
    ReviewEvent.objects.create(organisation_id=match.organisation_id, match=match, action=ReviewAction.EXPORTED,
                               from_status=match.review_status, to_status=match.review_status, actor=actor,
                               note=f"Evidence package exported ({len(files) + 1} files).")
    return f"imgprotect-evidence-match-{match.pk}.zip", buffer.getvalue()


def sha256sums(files: dict[str, bytes]) -> str:
    """``sha256sum -c`` input over ``files`` (name -> bytes)."""
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())


def zip_write(archive: zipfile.ZipFile, name: str, data: bytes, now: datetime) -> None:
    info = zipfile.ZipInfo(name, date_time=now.timetuple()[:6])
    # Images are already compressed; text compresses well.
    info.compress_type = zipfile.ZIP_DEFLATED if name.endswith((".json", ".txt", "SUMS")) else zipfile.ZIP_STORED
    archive.writestr(info, data)


def match_evidence_files(*, match: Match, actor: User | None, now: datetime) -> dict[str, bytes]:
    """One match's evidence, name -> bytes: both images as stored, the evidence PNG when drawn,
    ``report.json`` and ``report.txt``. Used for one confirmed match and for a case's package."""
    image = match.protected_image
    check = match.source_check
    files: dict[str, bytes] = {}
    suspect = _read(check.file.name) if check is not None else None
    # Named from the decoded format, never from the stored name (which once kept the uploader's extension).
    if suspect is not None:
        files[f"suspect.{extension_for(sniff_format(suspect[:16]))}"] = suspect
    protected = _read(image.file.name) if image is not None else None  # a hash-list match has no picture
    if protected is not None and image is not None:
        files[f"protected.{extension_for(image.format)}"] = protected
    evidence = _read(match.evidence.name) if match.evidence else None
    if evidence is not None:
        files["evidence.png"] = evidence
    digests = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()}

    trail = list(ReviewEvent.objects.filter(match=match).select_related("actor").order_by("created", "id"))
    confirmation = next((e for e in reversed(trail) if e.action == ReviewAction.CONFIRMED), None)
    signals = ((check.result or {}).get("signals") or {}) if check is not None else {}
    report: dict[str, Any] = {
        "report": "imgprotect match evidence",
        "generated": now.isoformat(),
        "generated_by": _who(actor),
        "organisation": {"slug": match.organisation.slug, "name": match.organisation.name},
        "match": {
            "id": match.pk,
            "url": settings.SITE_URL + reverse("portal:match", args=[match.organisation.slug, match.pk]),
            "verdict": match.verdict,
            "verdict_label": match.get_verdict_display(),
            "score": match.score,
            "signal_scores": match.signal_scores,
            "region": match.region,
            "edit_report": match.edit_report,
            "edit_report_in_words": describe_edit_report(match.edit_report),
            "found": match.created.isoformat(),
            "review_status": match.review_status,
        },
        # Only a confirmed match names who confirmed it (a case's package holds matches still to review).
        "confirmed": {
            "by": _who(confirmation.actor if confirmation else match.reviewed_by),
            "at": (confirmation.created if confirmation else match.reviewed or now).isoformat(),
            "note": confirmation.note if confirmation else "",
        } if match.review_status == Match.Review.CONFIRMED else None,
        "suspect": {
            "check_id": check.pk if check else None,
            "original_name": check.original_name if check else "",
            "key": match.suspect_key,
            "found_at": getattr(getattr(check, "origin", None), "source", "") if check else match.suspect_key,
            "submitted": check.created.isoformat() if check else None,
            "sha256_bytes": check.sha256_bytes if check else "",
            "sha256_pixels": signals.get("sha256_pixels", ""),
            "phash": signals.get("phash", ""),
            "width": signals.get("width"),
            "height": signals.get("height"),
        },
        "hash_list": _hash_list_entry(match),
        "protected_image": None if image is None else {
            "id": image.pk,
            "collection": image.collection.name,
            "key": image.key,
            "registered": image.created.isoformat(),
            "sha256_bytes": image.sha256_bytes,
            "sha256_pixels": image.sha256_pixels,
            "phash": (image.signals or {}).get("phash", ""),
            "width": image.width,
            "height": image.height,
            "format": image.format,
        },
        "files": digests,
        "audit_trail": [
            {"at": e.created.isoformat(), "action": e.action, "from": e.from_status, "to": e.to_status,
             "by": e.actor.get_username() if e.actor else "imgprotect (automatic)", "note": e.note}
            for e in trail
        ],
    }
    text = _report_text(match, report)
    files["report.json"] = json.dumps(report, indent=2, ensure_ascii=False).encode()
    files["report.txt"] = text.encode()
    return files


def _hash_list_entry(match: Match) -> dict[str, Any] | None:
    entry = match.hash_list_entry
    if entry is None:
        return None
    return {"name": entry.hash_list.name, "entry_id": entry.pk, "pdq": entry.pdq, "label": entry.label,
            "pdq_distance": (match.signal_scores or {}).get("pdq_distance")}


def _report_text(match: Match, report: dict[str, Any]) -> str:
    m, s, p, c = report["match"], report["suspect"], report["protected_image"], report["confirmed"]
    lines = [
        "IMGPROTECT — EVIDENCE OF COPYING",
        "=" * 33,
        "",
        f"Organisation:   {report['organisation']['name']}",
        f"Match:          #{m['id']}  {m['url']}",
        f"Verdict:        {m['verdict_label']} (score {m['score']:.3f})",
        f"Found:          {m['found']}",
    ]
    if c is None:
        lines.append(f"Review status:  {match.get_review_status_display()}")
    else:
        lines.append(f"Confirmed by:   {(c['by'] or {}).get('name', 'unknown')} <{(c['by'] or {}).get('email', '')}> "
                     f"at {c['at']}")
    if c is not None and c["note"]:
        lines.append(f"Reviewer note:  {c['note']}")
    lines += ["", "What was changed", "----------------", describe_edit_report(match.edit_report)
              or "No geometric analysis for this match (found by hashes)."]
    lines += [f"  {label}: {value}" for label, value in edit_report_facts(match.edit_report)]
    lines += ["", "Scores", "------"]
    lines += [f"  {row.label}: {row.value}" for row in signal_rows(match.signal_scores)] or ["  (none)"]
    lines += ["", "Suspect image", "-------------",
              f"  Name:           {s['original_name'] or s['key'] or '—'}",
              f"  Found at:       {s['found_at'] or '—'}",
              f"  Submitted:      {s['submitted'] or '—'}",
              f"  Size:           {s['width']} x {s['height']} px",
              f"  SHA-256 bytes:  {s['sha256_bytes'] or '—'}",
              f"  SHA-256 pixels: {s['sha256_pixels'] or '—'}",
              f"  pHash:          {s['phash'] or '—'}", ""]
    if p is not None:
        lines += ["Protected image", "---------------",
                  f"  Collection:     {p['collection']}",
                  f"  Key:            {p['key']}",
                  f"  Registered:     {p['registered']}",
                  f"  Size:           {p['width']} x {p['height']} px ({p['format']})",
                  f"  SHA-256 bytes:  {p['sha256_bytes']}",
                  f"  SHA-256 pixels: {p['sha256_pixels']}",
                  f"  pHash:          {p['phash'] or '—'}", ""]
    if (h := report["hash_list"]) is not None:
        lines += ["Hash list entry", "---------------",
                  f"  Hash list:      {h['name']}",
                  f"  Label:          {h['label'] or '—'}",
                  f"  PDQ:            {h['pdq']}",
                  f"  PDQ distance:   {h['pdq_distance']} of 256 bits", ""]
    lines += ["Files in this package (SHA-256)", "-------------------------------"]
    lines += [f"  {info['sha256']}  {name} ({info['bytes']} bytes)" for name, info in report["files"].items()]
    lines += ["  report.json, report.txt: see SHA256SUMS", "", "Audit trail", "-----------"]
    lines += [f"  {e['at']}  {e['action']:<15} {e['by']}" + (f" — {e['note']}" if e["note"] else "")
              for e in report["audit_trail"]]
    lines += ["", f"Generated {report['generated']} by {(report['generated_by'] or {}).get('username', '')}.", ""]
    return "\n".join(lines)
