"""Checks (one suspect image matched on demand), the match reports they produce, review decisions on
them (the audit trail, licences, dismissed pairs, where a suspect was found) and webhooks with their
delivery log."""
from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models

from catalog.models import ApiKey, Collection, Organisation, ProtectedImage, split_emails, validate_email_list


class Verdict(models.TextChoices):
    EXACT = "exact", "Exact copy"
    NEAR_DUPLICATE = "near_duplicate", "Near duplicate"
    MODIFIED_COPY = "modified_copy", "Modified copy"
    SIMILAR = "similar", "Similar"
    HASH_LIST = "hash_list", "On a hash list"
    NONE = "none", "No match"


def check_upload_to(instance: "Check", filename: str) -> str:
    # check_submit names the file from the decoded format; any other extension is refused (catalog/files.py).
    from catalog.files import safe_extension

    return f"checks/{instance.organisation_id}/{uuid.uuid4().hex}.{safe_extension(filename)}"


class Check(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class PartialSearch(models.TextChoices):
        """The partial-copy pass (a logo pasted into a picture, a corner cropped out of one).

        A check answers once the cheap passes are done (digests, hashes, the CNN on the
        whole picture, verification); when they found no copy, the partial-copy pass (CNN
        on 13 tiles, about 10x the cost) runs after the answer, in a task of its own, and
        adds what it finds to the same check.
        """

        NONE = "", "Not run"            # queued, failed, or a check from before the pass existed
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        SKIPPED = "skipped", "Not needed"  # a whole-frame copy was found, or no CNN to search with
        FAILED = "failed", "Failed"

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="checks")
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.SET_NULL, help_text="Only match this collection."
    )
    file = models.FileField(upload_to=check_upload_to, max_length=300)
    original_name = models.CharField(max_length=255, blank=True)
    sha256_bytes = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    attempts = models.PositiveSmallIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True, help_text="When the first answer was written.")
    partial_search = models.CharField(max_length=16, choices=PartialSearch.choices, blank=True, default="",
                                      db_index=True)
    partial_started = models.DateTimeField(null=True, blank=True)
    completed = models.DateTimeField(null=True, blank=True, help_text="When every pass, the partial-copy one "
                                                                      "included, was done.")

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["organisation", "-created"], name="check_org_created")]

    def __str__(self) -> str:
        return f"check {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.FAILED}

    @property
    def is_complete(self) -> bool:
        """Finished, and no partial-copy search is still to come."""
        return self.is_finished and self.partial_search not in {self.PartialSearch.PENDING,
                                                                self.PartialSearch.RUNNING}


def evidence_upload_to(instance: "Match", filename: str) -> str:
    return f"evidence/{instance.organisation_id}/{uuid.uuid4().hex}.png"


class HashList(models.Model):
    """A hash-only bank: PDQ hashes imported from elsewhere (Meta's Hasher-Matcher-Actioner, a
    ThreatExchange file, a partner's list) that checks and scans match against with the verdict
    ``hash_list``. Only hashes are kept, never pictures (docs/hash-exchange.md)."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="hash_lists")
    name = models.CharField(max_length=100, help_text="Shown in match reports; the bank name of HMA lookups.")
    description = models.CharField(max_length=500, blank=True)
    alert_emails = models.TextField(blank=True, validators=[validate_email_list],
                                    help_text="Comma-separated addresses told about new matches.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["organisation", "name"], name="uniq_hash_list_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def alert_recipients(self) -> list[str]:
        return split_emails(self.alert_emails)


class HashListEntry(models.Model):
    hash_list = models.ForeignKey(HashList, on_delete=models.CASCADE, related_name="entries")
    pdq = models.CharField(max_length=64, help_text="256-bit PDQ, 64 lowercase hex digits.")
    quality = models.PositiveSmallIntegerField(null=True, blank=True)
    label = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["hash_list", "pdq"], name="uniq_hash_list_pdq")]
        verbose_name_plural = "hash list entries"

    def __str__(self) -> str:
        return f"{self.pdq[:16]}… in {self.hash_list_id}"


class Match(models.Model):
    """A match report: a suspect image (from a check or a bulk scan) copies a protected image, or its
    PDQ hash is on one of the organisation's hash lists (``hash_list_entry``; no reference picture)."""

    class Review(models.TextChoices):
        NEW = "new", "New"
        CONFIRMED = "confirmed", "Confirmed infringement"
        DISMISSED = "dismissed", "Dismissed"
        LICENSED = "licensed", "Licensed"

    # Named source_check because Model.check() is Django's system-check hook.
    # Null for matches found by a bulk scan, which name their suspect in suspect_key.
    source_check = models.ForeignKey(Check, null=True, blank=True, on_delete=models.CASCADE, related_name="matches")
    suspect_key = models.CharField(max_length=1024, blank=True, help_text="Where the suspect image came from.")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="matches")
    protected_image = models.ForeignKey(ProtectedImage, null=True, blank=True, on_delete=models.CASCADE,
                                        related_name="matches")
    hash_list_entry = models.ForeignKey(HashListEntry, null=True, blank=True, on_delete=models.CASCADE,
                                        related_name="matches")
    score = models.FloatField()
    verdict = models.CharField(max_length=32, choices=Verdict.choices, db_index=True)
    signal_scores = models.JSONField(default=dict)
    # Geometric evidence: the copied region as polygons on both images and what was changed.
    region = models.JSONField(null=True, blank=True)
    edit_report = models.JSONField(null=True, blank=True)
    evidence = models.FileField(upload_to=evidence_upload_to, max_length=300, blank=True)
    review_status = models.CharField(max_length=16, choices=Review.choices, default=Review.NEW, db_index=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reviewed = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    alerted = models.DateTimeField(null=True, blank=True)
    # Found when the protected image was added after the suspect was seen (matching/retro.py).
    found_retroactively = models.BooleanField(default=False)
    # The case grouping matches from the same source (matching/cases.py); none when the source is unknown.
    case = models.ForeignKey("Case", null=True, blank=True, on_delete=models.SET_NULL, related_name="matches")

    class Meta:
        ordering = ["-created", "-score", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["source_check", "protected_image"], name="uniq_match_pair"),
            models.UniqueConstraint(fields=["source_check", "hash_list_entry"], name="uniq_match_hash_entry"),
            models.CheckConstraint(
                condition=(models.Q(protected_image__isnull=False, hash_list_entry__isnull=True)
                           | models.Q(protected_image__isnull=True, hash_list_entry__isnull=False)),
                name="match_image_xor_hash_entry"),
        ]
        indexes = [models.Index(fields=["organisation", "review_status", "-created"], name="match_org_review")]
        verbose_name_plural = "matches"

    def __str__(self) -> str:
        target = self.protected_image_id if self.protected_image_id else f"hash list entry {self.hash_list_entry_id}"
        return f"{self.verdict} {self.score:.2f}: {self.source_check_id or self.suspect_key} ~ {target}"

    @property
    def is_hash_list(self) -> bool:
        return self.hash_list_entry_id is not None

    @property
    def reference_label(self) -> str:
        """What the suspect copies, for people: the protected image's key, or the hash list's entry."""
        if self.protected_image is not None:
            return self.protected_image.key
        entry = self.hash_list_entry
        return f"{entry.hash_list.name}: {entry.label or entry.pdq[:16]}" if entry else ""


class ReviewAction(models.TextChoices):
    CONFIRMED = "confirmed", "Confirmed infringement"
    DISMISSED = "dismissed", "Dismissed"
    LICENSED = "licensed", "Marked licensed"
    REOPENED = "reopened", "Reopened"
    AUTO_DISMISSED = "auto_dismissed", "Auto-dismissed (pair dismissed before)"
    AUTO_LICENSED = "auto_licensed", "Auto-resolved (licensed source)"
    EXPORTED = "exported", "Evidence exported"


class ReviewEvent(models.Model):
    """The audit trail of a match: who decided what, when, and why."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    match = models.ForeignKey(Match, on_delete=models.CASCADE, related_name="review_events")
    action = models.CharField(max_length=32, choices=ReviewAction.choices)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    note = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "portal_reviewevent"  # created by the portal app; moved without copying
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} on match {self.match_id}"


class Licence(models.Model):
    """Someone holds a licence to use a protected image, from a source (a domain or a URL/path prefix).

    Matches of that image from that source are resolved as licensed without alerting.
    An empty source covers every source.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    protected_image = models.ForeignKey(ProtectedImage, on_delete=models.CASCADE, related_name="licences")
    holder = models.CharField(max_length=200)
    source = models.CharField(max_length=500, blank=True)
    note = models.TextField(blank=True)
    origin_match = models.ForeignKey(Match, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "portal_licence"  # created by the portal app; moved without copying
        ordering = ["-created"]
        indexes = [models.Index(fields=["protected_image", "revoked"], name="licence_image_active")]

    def __str__(self) -> str:
        return f"{self.holder} may use {self.protected_image_id} from {self.source or 'anywhere'}"


class DismissedPair(models.Model):
    """A suspect picture and a protected image judged unrelated: the pair never alerts again.

    The suspect is identified by its SHA-256 digests (file bytes and decoded pixels)
    or, for scans, by its key.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    protected_image = models.ForeignKey(ProtectedImage, on_delete=models.CASCADE, related_name="dismissed_pairs")
    suspect_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    suspect_sha256_pixels = models.CharField(max_length=64, blank=True, db_index=True)
    suspect_key = models.CharField(max_length=1024, blank=True)
    origin_match = models.ForeignKey(Match, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    dismissed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "portal_dismissedpair"  # created by the portal app; moved without copying
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"dismissed {self.suspect_sha256[:12] or self.suspect_key} ~ {self.protected_image_id}"


class CheckOrigin(models.Model):
    """Where a suspect image submitted in the portal was found (a URL or a site), for licences."""

    source_check = models.OneToOneField(Check, on_delete=models.CASCADE, related_name="origin")
    source = models.CharField(max_length=500)

    class Meta:
        db_table = "portal_checkorigin"  # created by the portal app; moved without copying

    def __str__(self) -> str:
        return self.source


class Case(models.Model):
    """The matches of one organisation whose suspects came from one source: a site (the host of where a
    checked suspect was found) or a bulk scan's source prefix. Worked as one (matching/cases.py)."""

    class Kind(models.TextChoices):
        SITE = "site", "Website"
        SCAN = "scan", "Scanned source"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        NOTICE_SENT = "notice_sent", "Notice sent"
        LICENSED = "licensed", "Licensed"
        RESOLVED = "resolved", "Resolved"

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="cases")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    source = models.CharField(max_length=1024, help_text="The normalised host, or the scan's source prefix.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    last_match = models.DateTimeField(null=True, blank=True, help_text="When a match last joined the case.")

    class Meta:
        ordering = ["-last_match", "-id"]
        constraints = [models.UniqueConstraint(fields=["organisation", "kind", "source"], name="uniq_case_source")]
        indexes = [models.Index(fields=["organisation", "status", "-last_match"], name="case_org_status")]

    def __str__(self) -> str:
        return f"case {self.pk}: {self.source} ({self.status})"


class CaseEvent(models.Model):
    """The history of a case: who changed what, when, with a note (as ReviewEvent is for a match)."""

    class Action(models.TextChoices):
        OPENED = "opened", "Case opened"
        MATCHES_ADDED = "matches_added", "Matches added"
        STATUS = "status", "Status changed"
        REOPENED = "reopened", "Reopened by a new match"
        ASSIGNED = "assigned", "Assignee changed"
        NOTE = "note", "Note"
        EXPORTED = "exported", "Evidence package exported"

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=32, choices=Action.choices)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    note = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} on case {self.case_id}"

    @property
    def status_change(self) -> str:
        """"Open → Notice sent" for a status change, else ""."""
        if self.action not in (self.Action.STATUS, self.Action.REOPENED):
            return ""
        labels = dict(Case.Status.choices)
        return f"{labels.get(self.from_status, self.from_status)} → {labels.get(self.to_status, self.to_status)}"


def new_webhook_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


class Webhook(models.Model):
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    # Kept in clear: the service must sign with it. Only admins ever see it.
    secret = models.CharField(max_length=100, default=new_webhook_secret)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "portal_webhook"  # created by the portal app; moved without copying
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=64)
    # Unique per webhook, so a redelivered task or a second call never sends an event twice.
    event_key = models.CharField(max_length=128)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    next_retry = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempt = models.DateTimeField(null=True, blank=True)
    delivered = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "portal_webhookdelivery"  # created by the portal app; moved without copying
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["webhook", "event_key"], name="uniq_webhook_event")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook_id} ({self.status})"


class SelfTest(models.Model):
    """A protection self-test of one protected image: edited copies of it matched against the
    organisation's live index as checks would be, without writing checks, matches or alerts
    (``matching/selftest.py``, docs/self-test.md)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="self_tests")
    image = models.ForeignKey(ProtectedImage, on_delete=models.CASCADE, related_name="self_tests")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    failure_reason = models.TextField(blank=True)
    # {"kind": "photo" | "mark", "edits": [{"edit", "label", "found", "rank", "verdict", "score", "partial",
    # "elapsed_ms"}, ...], "found": n, "total": n}
    results = models.JSONField(null=True, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["image", "-created"], name="selftest_image_created")]

    def __str__(self) -> str:
        return f"self-test {self.pk} of image {self.image_id} ({self.status})"


class SuspectSignals(models.Model):
    """What a retroactive re-check needs of a suspect seen before: its digests, hashes (with their
    flip/rotation variants) and CNN embeddings, not its pixels (matching/retro.py).

    A checked image has ``source_check`` (its stored upload, while kept, allows verification); a
    scanned image has ``suspect_key``. Kept for the organisation's ``suspect_retention_days``.
    """

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    source_check = models.OneToOneField(Check, null=True, blank=True, on_delete=models.CASCADE,
                                        related_name="suspect_signals")
    suspect_key = models.CharField(max_length=1024, blank=True)
    # The scope the suspect was checked in: a check restricted to one collection only matches it.
    collection = models.ForeignKey(Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    sha256_bytes = models.CharField(max_length=64, blank=True)
    sha256_pixels = models.CharField(max_length=64, blank=True)
    # The eight dihedral variants (entry 0: the picture as given) as big-endian uint64 words:
    # 8 x 8 bytes of pHash, 8 x 32 bytes of PDQ (empty when PDQ's quality is too low to use).
    phash_variants = models.BinaryField()
    pdq_variants = models.BinaryField(blank=True, default=b"")
    pdq_quality = models.PositiveSmallIntegerField(default=0)
    # float16 CNN embeddings: the whole picture, and the partial-copy pass's tiles when it ran.
    embedding = models.BinaryField(null=True, blank=True)
    tile_embeddings = models.BinaryField(null=True, blank=True)
    # Which network made them (``ProtectedImage.embedding_model``): a re-check compares them only with
    # vectors of the same network; "" when unknown (kept before it was recorded).
    embedding_model = models.CharField(max_length=64, blank=True, default="")
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["organisation", "created"], name="suspect_org_created")]
        constraints = [models.UniqueConstraint(fields=["organisation", "suspect_key"],
                                               condition=models.Q(source_check__isnull=True),
                                               name="uniq_scan_suspect")]
        verbose_name_plural = "suspect signals"

    def __str__(self) -> str:
        return f"suspect {self.source_check_id or self.suspect_key}"


class RecheckMark(models.Model):
    """How far retroactive re-checks got in an organisation: the images indexed up to ``until`` have
    been searched for (matching/retro.py), so the images of one upload are searched for together."""

    organisation = models.OneToOneField(Organisation, on_delete=models.CASCADE, related_name="+")
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"re-checked up to {self.until:%Y-%m-%d %H:%M:%S}"
