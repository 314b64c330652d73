"""Portal forms: they parse and validate input; services do the writing."""
from __future__ import annotations

from typing import cast

from django import forms
from django.contrib.auth import password_validation

from catalog.models import AlertFrequency, Collection, Role, validate_email_list
from catalog.services import MAX_SUSPECT_RETENTION_DAYS
from catalog.validators import single_line
from matching.models import Match, Verdict
from matching.review import Decision

ROLE_CHOICES = [(Role.VIEWER, "Viewer — read-only"), (Role.MEMBER, "Member — uploads, checks, reviews"),
                (Role.ADMIN, "Admin — also manages settings"), (Role.OWNER, "Owner — everything")]


class CollectionForm(forms.Form):
    name = forms.CharField(max_length=200, validators=[single_line])
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


class ImageUploadForm(forms.Form):
    file = forms.FileField()
    key = forms.CharField(required=False, max_length=1024)


class CheckForm(forms.Form):
    file = forms.FileField(label="Suspect image")
    collection = forms.ModelChoiceField(queryset=Collection.objects.none(), required=False,
                                        empty_label="All collections")
    found_at = forms.CharField(required=False, max_length=500, label="Found at",
                               help_text="Where you found it (a URL or a site); used by licences.")

    def __init__(self, *args, organisation, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["collection"]).queryset = (
            Collection.objects.filter(organisation=organisation).order_by("name"))


class DeskFilterForm(forms.Form):
    verdict = forms.ChoiceField(required=False, choices=[("", "Any verdict")]
                                + [c for c in Verdict.choices if c[0] != Verdict.NONE])
    collection = forms.ModelChoiceField(queryset=Collection.objects.none(), required=False,
                                        empty_label="All collections")
    status = forms.ChoiceField(required=False, choices=[("new", "To review"), ("", "Any status")]
                               + [c for c in Match.Review.choices if c[0] != Match.Review.NEW])
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    q = forms.CharField(required=False, max_length=200, label="Search")

    def __init__(self, *args, organisation, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["collection"]).queryset = (
            Collection.objects.filter(organisation=organisation).order_by("name"))

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[(d, d) for d in Decision.ALL])
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    holder = forms.CharField(required=False, max_length=200, label="Licence holder")
    source = forms.CharField(required=False, max_length=500, label="Licensed source",
                             help_text="A domain (example.com), a URL prefix, or empty for any source.")

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("decision") == Decision.LICENSE and not (data.get("holder") or "").strip():
            self.add_error("holder", "Say who holds the licence.")
        return data


class BulkReviewForm(ReviewForm):
    ids = forms.CharField()  # comma-separated or repeated "ids" values, parsed in clean_ids

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and hasattr(data, "getlist"):
            data = data.copy()
            data["ids"] = ",".join(data.getlist("ids"))
        super().__init__(data, *args, **kwargs)

    def clean_ids(self) -> list[int]:
        raw = [part for part in self.cleaned_data["ids"].split(",") if part.strip()]
        try:
            ids = sorted({int(part) for part in raw})
        except ValueError:
            raise forms.ValidationError("Invalid selection.") from None
        if not ids:
            raise forms.ValidationError("Select at least one match.")
        if len(ids) > 500:
            raise forms.ValidationError("Select at most 500 matches at once.")
        return ids


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


class SignupForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]+$", max_length=150,
                                error_messages={"invalid": "Letters, digits and @/./+/-/_ only."})
    password1 = forms.CharField(label="Password", widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label="Password again", widget=forms.PasswordInput, strip=False)

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        elif data.get("password1"):
            try:
                password_validation.validate_password(data["password1"])
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return data


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[single_line])
    role = forms.ChoiceField(choices=[(Role.VIEWER, "Viewer — read-only"),
                                      (Role.MEMBER, "Member — upload and check"),
                                      (Role.ADMIN, "Admin — also manage collections")], initial=Role.MEMBER)


class AlertsForm(forms.Form):
    alert_emails = forms.CharField(required=False, label="Recipients", validators=[validate_email_list],
                                   widget=forms.TextInput(attrs={"placeholder": "legal@example.com, ..."}))
    alert_frequency = forms.ChoiceField(choices=AlertFrequency.choices, label="Frequency")


class ThresholdForm(forms.Form):
    phash_max_distance = forms.IntegerField(
        required=False, min_value=0, max_value=64, label="pHash distance at most",
        help_text="Stricter than the service default only; empty uses the default.")


class RetentionForm(forms.Form):
    suspect_retention_days = forms.IntegerField(
        min_value=0, max_value=MAX_SUSPECT_RETENTION_DAYS, label="Keep suspect signals for (days)",
        help_text="0 keeps none: images you protect later are then never searched for in past checks and scans.")


class WebhookForm(forms.Form):
    url = forms.URLField(max_length=500, label="Endpoint URL", assume_scheme="https")
    description = forms.CharField(required=False, max_length=200, validators=[single_line])
    active = forms.BooleanField(required=False, initial=True)


class WatchForm(forms.Form):
    source = forms.CharField(max_length=2048, label="Source",
                             help_text="A directory under your organisation's allowed roots, or s3://bucket/prefix.")
    collection = forms.ModelChoiceField(queryset=Collection.objects.none(), required=False,
                                        empty_label="All collections")
    schedule = forms.ChoiceField(choices=[("hourly", "Every hour"), ("daily", "Every day")], initial="daily")

    def __init__(self, *args, organisation, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["collection"]).queryset = (
            Collection.objects.filter(organisation=organisation).order_by("name"))
