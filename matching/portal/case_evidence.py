"""One evidence package for a whole case: a ZIP to attach to a takedown notice about one source.

It holds, under ``case-<id>/``, ``SUMMARY.txt`` (plain text a notice can quote: the site, the
dates, each protected image and where its copy was found, verdicts, what was changed, the case's
history), ``case.json`` (the same, for machines), one ``match-<id>/`` folder per match with exactly
what the per-match package holds (``matching/portal/evidence.py``: both images, the evidence PNG,
``report.json``, ``report.txt``), and ``SHA256SUMS`` over every other file. Dismissed matches are
left out (a reviewer judged them no copy); the summary says how many.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from matching.cases import case_export_recorded, case_history, case_matches
from matching.models import Case, Match
from matching.portal.evidence import match_evidence_files, zip_write
from matching.portal.presentation import describe_edit_report
from matching.review import suspect_of

# The ZIP is written to a temporary file past this size, so a large case never sits whole in memory.
_SPOOL_BYTES = 16 * 1024 * 1024


@transaction.atomic
def case_evidence_export(*, case: Case, actor: User | None) -> tuple[str, IO[bytes]]:
    """Build the case's ZIP (file name, an open file at its start) and record the export in its history."""
    now = timezone.now()
    matches = list(case_matches(case=case))
    kept = [m for m in matches if m.review_status != Match.Review.DISMISSED]
    left_out = len(matches) - len(kept)
    folder = f"case-{case.pk}"
    sums: list[str] = []
    entries: list[dict[str, Any]] = []
    out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
    with zipfile.ZipFile(out, "w") as archive:
        def add(name: str, data: bytes) -> None:
            zip_write(archive, f"{folder}/{name}", data, now)
            sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")

        for match in kept:
            files = match_evidence_files(match=match, actor=actor, now=now)  # one match's files at a time
            for name, data in files.items():
                add(f"match-{match.pk}/{name}", data)
            entries.append(_entry(match, sorted(files)))
        summary = _summary(case, entries, left_out=left_out, now=now, actor=actor)
        add("case.json", json.dumps(summary, indent=2, ensure_ascii=False).encode())
        add("SUMMARY.txt", _summary_text(summary).encode())
        zip_write(archive, f"{folder}/SHA256SUMS", "".join(sums).encode(), now)
    case_export_recorded(case=case, actor=actor, files=len(sums) + 1)
    out.seek(0)
    return f"imgprotect-evidence-case-{case.pk}.zip", out


def _one_line(text: str) -> str:
    """What a stranger typed (where a copy was found, a file's key), safe on one line of the summary:
    no line break or other control character that could forge a line of the notice."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _protected(match: Match) -> dict[str, Any] | None:
    # Read through getattr: a match may name no protected picture (one found on a hash list, where that
    # kind of match exists), and the summary must still describe it.
    image = getattr(match, "protected_image", None)
    if image is None:
        return None
    return {"id": image.pk, "collection": image.collection.name, "key": image.key,
            "registered": image.created.isoformat()}


def _hash_list(match: Match) -> dict[str, Any] | None:
    entry = getattr(match, "hash_list_entry", None)
    if entry is None:
        return None
    return {"name": entry.hash_list.name, "label": getattr(entry, "label", ""), "pdq": getattr(entry, "pdq", "")}


def _entry(match: Match, files: list[str]) -> dict[str, Any]:
    return {
        "match_id": match.pk,
        "url": settings.SITE_URL + reverse("portal:match", args=[match.organisation.slug, match.pk]),
        "protected_image": _protected(match),
        "hash_list": _hash_list(match),
        "found_at": suspect_of(match).source,
        "suspect_name": match.source_check.original_name if match.source_check else match.suspect_key,
        "found": match.created.isoformat(),
        "verdict": match.verdict,
        "verdict_label": match.get_verdict_display(),
        "score": match.score,
        "review_status": match.review_status,
        "review_label": match.get_review_status_display(),
        "edit_report": match.edit_report,
        "edit_report_in_words": describe_edit_report(match.edit_report),
        "folder": f"match-{match.pk}/",
        "files": files,
    }


def _summary(case: Case, entries: list[dict[str, Any]], *, left_out: int, now: Any,
             actor: User | None) -> dict[str, Any]:
    found = sorted(e["found"] for e in entries)
    return {
        "report": "imgprotect case evidence",
        "generated": now.isoformat(),
        "generated_by": actor.get_username() if actor is not None and actor.is_authenticated else "",
        "organisation": {"slug": case.organisation.slug, "name": case.organisation.name},
        "case": {
            "id": case.pk,
            "url": settings.SITE_URL + reverse("portal:case", args=[case.organisation.slug, case.pk]),
            "kind": case.kind,
            "kind_label": case.get_kind_display(),
            "source": case.source,
            "status": case.status,
            "status_label": case.get_status_display(),
            "assignee": case.assignee.get_username() if case.assignee else "",
            "opened": case.created.isoformat(),
            "first_found": found[0] if found else None,
            "last_found": found[-1] if found else None,
        },
        "matches": entries,
        "dismissed_left_out": left_out,
        "history": [
            {"at": e.created.isoformat(), "action": e.action, "from": e.from_status, "to": e.to_status,
             "by": e.actor.get_username() if e.actor else "imgprotect (automatic)", "note": e.note}
            for e in case_history(case=case)
        ],
    }


def _summary_text(summary: dict[str, Any]) -> str:
    c = summary["case"]
    where = "Website" if c["kind"] == Case.Kind.SITE else "Scanned source"
    lines = [
        "IMGPROTECT — CASE SUMMARY",
        "=" * 25,
        "",
        f"Organisation:   {_one_line(summary['organisation']['name'])}",
        f"Case:           #{c['id']}  {c['url']}",
        f"{where + ':':<16}{_one_line(c['source'])}",
        f"Status:         {c['status_label']}" + (f" (assigned to {c['assignee']})" if c["assignee"] else ""),
        f"Case opened:    {c['opened']}",
        f"Copies found:   {len(summary['matches'])}, first on {c['first_found'] or '—'}, "
        f"last on {c['last_found'] or '—'}",
    ]
    if summary["dismissed_left_out"]:
        n = summary["dismissed_left_out"]
        lines.append(f"Left out:       {n} dismissed match{'es' if n != 1 else ''} (judged not a copy)")
    lines += ["", "Each protected image and where its copy was found", "-" * 50]
    for n, e in enumerate(summary["matches"], 1):
        p, h = e["protected_image"], e["hash_list"] or {}
        lines += [
            f"{n}. Match #{e['match_id']}: {e['verdict_label']} (score {e['score']:.3f}), "
            f"review: {e['review_label']}",
            f"   Protected image: {_one_line(p['key'])} (collection {_one_line(p['collection'])}, "
            f"registered {p['registered']})" if p is not None else
            f"   On hash list:    {_one_line(h.get('name', '—'))}"
            + (f" ({_one_line(h['label'])})" if h.get("label") else ""),
            f"   Copy found at:   {_one_line(e['found_at']) or '—'}",
            f"   Found on:        {e['found']}",
            f"   What changed:    {e['edit_report_in_words'] or 'No geometric analysis (found by hashes).'}",
            f"   Files:           {e['folder']} ({', '.join(e['files'])})",
            f"   Match page:      {e['url']}",
            "",
        ]
    if not summary["matches"]:
        lines += ["(no match to report)", ""]
    lines += ["Case history", "-" * 12]
    lines += [f"  {h['at']}  {h['action']:<14} {h['by']}" + (f" — {_one_line(h['note'])}" if h["note"] else "")
              for h in summary["history"]]
    lines += ["", "Every file of this package is listed with its SHA-256 in SHA256SUMS (sha256sum -c SHA256SUMS).",
              f"Generated {summary['generated']}" + (f" by {summary['generated_by']}." if summary["generated_by"]
                                                     else "."), ""]
    return "\n".join(lines)
