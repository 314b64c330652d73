"""Settings pages (admins): members and invitations, API keys, alerts, thresholds, webhooks, decisions."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django import forms
from django.conf import settings as django_settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from catalog import services as catalog_services
from catalog.models import ApiKey, Role
from imgprotect.errors import ServiceError
from matching import review as review_services
from matching import webhooks as webhook_services
from matching.alerts import pending_digest_counts
from matching.engine import default_thresholds
from matching.portal import selectors, services
from matching.portal.access import ROLE_HELP, PortalRequest, portal_view
from matching.models import SuspectSignals
from matching.portal.forms import AlertsForm, ApiKeyForm, InviteForm, RetentionForm, RoleForm, ThresholdForm, WebhookForm
from matching.portal.views.common import found, org_url, page, paginate
from matching.webhooks import EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

ADMIN = Role.ADMIN


def _form_errors(request: HttpRequest, form) -> None:
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else (form.fields[field].label or field.replace("_", " ").capitalize())
        for error in errors:
            messages.error(request, f"{label}: {error}" if label else error)


def _member_action(request: HttpRequest, action: Callable[[], Any], success: Callable[[Any], str]) -> bool:
    """Run a membership service call for a portal form: a 403 refusal is PermissionDenied, any other
    refusal a flashed error; on success, flash ``success(result)``. True when it succeeded."""
    try:
        result = action()
    except ServiceError as exc:
        if exc.status == 403:
            raise_forbidden(exc)
        messages.error(request, exc.message)
        return False
    messages.success(request, success(result))
    return True


@portal_view(role=ADMIN)
def index(request: PortalRequest) -> HttpResponse:
    return HttpResponseRedirect(org_url(request, "settings-members"))


# --- members ----------------------------------------------------------------------------------

@portal_view(role=ADMIN)
def members(request: PortalRequest) -> HttpResponse:
    return page(request, "portal/settings/members.html", {
        "members": selectors.members_of(request.organisation),
        "invitations": selectors.open_invitations(request.organisation),
        "invite_form": InviteForm(), "roles": cast(forms.ChoiceField, RoleForm.base_fields["role"]).choices, "role_help": ROLE_HELP,
    })


@portal_view(role=ADMIN, methods=["POST"])
def member_invite(request: PortalRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    if form.is_valid():
        _member_action(
            request,
            lambda: catalog_services.invitation_create(
                organisation=request.organisation, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
                invited_by=request.user, actor_role=request.role),
            lambda issued: f"Invitation sent to {issued.invitation.email}.")
    else:
        _form_errors(request, form)
    return HttpResponseRedirect(org_url(request, "settings-members"))


def raise_forbidden(exc: ServiceError) -> None:
    raise PermissionDenied(exc.message)


@portal_view(role=ADMIN, methods=["POST"])
def member_role(request: PortalRequest, pk: int) -> HttpResponse:
    membership = found(selectors.membership_of(request.organisation, pk))
    form = RoleForm(request.POST)
    if form.is_valid():
        _member_action(
            request,
            lambda: catalog_services.member_role_set(membership=membership, role=form.cleaned_data["role"],
                                             actor_role=request.role),
            lambda _: f"{membership.user.get_username()} is now {form.cleaned_data['role']}.")
    else:
        _form_errors(request, form)
    return HttpResponseRedirect(org_url(request, "settings-members"))


@portal_view(role=ADMIN, methods=["POST"])
def member_remove(request: PortalRequest, pk: int) -> HttpResponse:
    membership = found(selectors.membership_of(request.organisation, pk))
    removed = _member_action(request,
                             lambda: catalog_services.member_remove(membership=membership, actor_role=request.role),
                             lambda _: f"{membership.user.get_username()} was removed.")
    if removed and membership.user_id == request.user.pk:
        return HttpResponseRedirect("/")
    return HttpResponseRedirect(org_url(request, "settings-members"))


@portal_view(role=ADMIN, methods=["POST"])
def invitation_revoke(request: PortalRequest, pk: int) -> HttpResponse:
    invitation = found(selectors.invitation_of(request.organisation, pk))
    catalog_services.invitation_revoke(invitation=invitation)
    messages.success(request, f"The invitation to {invitation.email} was withdrawn.")
    return HttpResponseRedirect(org_url(request, "settings-members"))


# --- API keys ----------------------------------------------------------------------------------

@portal_view(role=ADMIN, methods=["GET", "POST"])
def api_keys(request: PortalRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        # The secret is rendered in this response only (no redirect, nothing stored): shown once.
        issued = catalog_services.api_key_create(organisation=request.organisation, name=form.cleaned_data["name"],
                                                 role=form.cleaned_data["role"], created_by=request.user)
        secret = issued.secret
        form = ApiKeyForm()
        messages.success(request, f"API key “{issued.key.name}” created.")
    keys = ApiKey.objects.filter(organisation=request.organisation).select_related("created_by")
    return page(request, "portal/settings/api_keys.html", {"form": form, "keys": keys, "secret": secret,
                                                           "api_base": django_settings.SITE_URL + "/api/v1/"},
                status=400 if request.method == "POST" and secret is None else 200)


@portal_view(role=ADMIN, methods=["POST"])
def api_key_revoke(request: PortalRequest, pk: int) -> HttpResponse:
    key = found(ApiKey.objects.filter(organisation=request.organisation, pk=pk).first())
    catalog_services.api_key_revoke(key=key)
    messages.success(request, f"API key “{key.name}” revoked; requests with it now fail.")
    return HttpResponseRedirect(org_url(request, "settings-api-keys"))


# --- alerts and thresholds -------------------------------------------------------------------

@portal_view(role=ADMIN)
def alerts(request: PortalRequest) -> HttpResponse:
    cols = list(selectors.collections_of(request.organisation))
    pending = pending_digest_counts(cols)
    rows = [(c, AlertsForm(initial={"alert_emails": c.alert_emails, "alert_frequency": c.alert_frequency},
                           prefix=f"c{c.pk}"), pending.get(c.pk, 0)) for c in cols]
    return page(request, "portal/settings/alerts.html", {"rows": rows, "digest_hour": _digest_hour()})


def _digest_hour() -> int:
    schedule = django_settings.CELERY_BEAT_SCHEDULE.get("alert-digest-daily", {}).get("schedule")
    hours = getattr(schedule, "hour", None)
    return min(hours) if hours else 8


@portal_view(role=ADMIN, methods=["POST"])
def alerts_save(request: PortalRequest, pk: int) -> HttpResponse:
    col = found(selectors.collection_of(request.organisation, pk))
    form = AlertsForm(request.POST, prefix=f"c{col.pk}")
    if form.is_valid():
        try:
            services.collection_alerts_set(collection=col, **form.cleaned_data)
        except (ServiceError, ValidationError) as exc:
            messages.error(request, getattr(exc, "message", None) or "; ".join(cast(ValidationError, exc).messages))
        else:
            messages.success(request, f"Alerts for “{col.name}” saved.")
    else:
        _form_errors(request, form)
    return HttpResponseRedirect(org_url(request, "settings-alerts") + f"#collection-{col.pk}")


@portal_view(role=ADMIN)
def thresholds(request: PortalRequest) -> HttpResponse:
    cols = list(selectors.collections_of(request.organisation))
    rows = [(c, ThresholdForm(initial={"phash_max_distance": c.phash_max_distance}, prefix=f"c{c.pk}")) for c in cols]
    return page(request, "portal/settings/thresholds.html", {
        "rows": rows, "default": default_thresholds().phash_near_duplicate})


@portal_view(role=ADMIN, methods=["POST"])
def thresholds_save(request: PortalRequest, pk: int) -> HttpResponse:
    col = found(selectors.collection_of(request.organisation, pk))
    form = ThresholdForm(request.POST, prefix=f"c{col.pk}")
    if form.is_valid():
        try:
            services.collection_threshold_set(collection=col,
                                              phash_max_distance=form.cleaned_data["phash_max_distance"])
        except (ServiceError, ValidationError) as exc:
            messages.error(request, getattr(exc, "message", None) or "; ".join(cast(ValidationError, exc).messages))
        else:
            messages.success(request, f"Threshold for “{col.name}” saved.")
    else:
        _form_errors(request, form)
    return HttpResponseRedirect(org_url(request, "settings-thresholds") + f"#collection-{col.pk}")


# --- retention of suspect signals ---------------------------------------------------------------

@portal_view(role=ADMIN, methods=["GET", "POST"])
def retention(request: PortalRequest) -> HttpResponse:
    org = request.organisation
    form = RetentionForm(request.POST or None, initial={"suspect_retention_days": org.suspect_retention_days})
    if request.method == "POST":
        if form.is_valid():
            try:
                catalog_services.organisation_suspect_retention_set(
                    organisation=org, days=form.cleaned_data["suspect_retention_days"])
            except ServiceError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"Suspect signals are kept for {org.suspect_retention_days} days."
                                 if org.suspect_retention_days else "Suspect signals are no longer kept.")
        else:
            _form_errors(request, form)
        return HttpResponseRedirect(org_url(request, "settings-retention"))
    return page(request, "portal/settings/retention.html", {
        "form": form, "kept": SuspectSignals.objects.filter(organisation=org).count()})


# --- webhooks --------------------------------------------------------------------------------------

@portal_view(role=ADMIN, methods=["GET", "POST"])
def webhooks(request: PortalRequest) -> HttpResponse:
    form = WebhookForm(request.POST or None, initial={"active": True})
    if request.method == "POST" and form.is_valid():
        try:
            hook = webhook_services.webhook_create(organisation=request.organisation, url=form.cleaned_data["url"],
                                                   description=form.cleaned_data["description"],
                                                   active=form.cleaned_data["active"], created_by=request.user)
        except ValidationError as exc:
            form.add_error("url", exc)
        else:
            messages.success(request, "Webhook added. Send a test event to check your endpoint.")
            return HttpResponseRedirect(org_url(request, "settings-webhook", hook.pk))
    return page(request, "portal/settings/webhooks.html", {
        "form": form, "webhooks": selectors.webhooks_of(request.organisation),
        "allow_private": django_settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE,
    }, status=400 if request.method == "POST" else 200)


@portal_view(role=ADMIN, methods=["GET", "POST"])
def webhook(request: PortalRequest, pk: int) -> HttpResponse:
    hook = found(selectors.webhook_of(request.organisation, pk))
    form = WebhookForm(request.POST or None,
                       initial={"url": hook.url, "description": hook.description, "active": hook.active})
    if request.method == "POST" and form.is_valid():
        try:
            webhook_services.webhook_update(webhook=hook, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error("url", exc)
        else:
            messages.success(request, "Webhook saved.")
            return HttpResponseRedirect(org_url(request, "settings-webhook", hook.pk))
    deliveries = paginate(request, hook.deliveries.all(), 25)
    return page(request, "portal/settings/webhook.html", {
        "hook": hook, "form": form, "page_obj": deliveries,
        "headers": {"event": EVENT_HEADER, "signature": SIGNATURE_HEADER, "timestamp": TIMESTAMP_HEADER},
        "max_attempts": django_settings.IMGPROTECT_WEBHOOK_MAX_ATTEMPTS,
    }, status=400 if request.method == "POST" else 200)


@portal_view(role=ADMIN, methods=["POST"])
def webhook_test(request: PortalRequest, pk: int) -> HttpResponse:
    hook = found(selectors.webhook_of(request.organisation, pk))
    delivery = webhook_services.webhook_send_test(webhook=hook)
    delivery.refresh_from_db()
    if delivery.status == delivery.Status.DELIVERED:
        messages.success(request, f"Test event delivered: your endpoint answered {delivery.status_code}.")
    elif delivery.attempts:
        messages.error(request, f"Test event failed ({delivery.error or delivery.status_code}); "
                                "see the delivery log below.")
    else:
        messages.info(request, "Test event queued; the delivery log shows the outcome.")
    return HttpResponseRedirect(org_url(request, "settings-webhook", hook.pk))


@portal_view(role=ADMIN, methods=["POST"])
def webhook_rotate(request: PortalRequest, pk: int) -> HttpResponse:
    hook = found(selectors.webhook_of(request.organisation, pk))
    webhook_services.webhook_rotate_secret(webhook=hook)
    messages.success(request, "New signing secret made; update your endpoint's copy now.")
    return HttpResponseRedirect(org_url(request, "settings-webhook", hook.pk))


@portal_view(role=ADMIN, methods=["POST"])
def webhook_delete(request: PortalRequest, pk: int) -> HttpResponse:
    hook = found(selectors.webhook_of(request.organisation, pk))
    webhook_services.webhook_delete(webhook=hook)
    messages.success(request, "Webhook deleted.")
    return HttpResponseRedirect(org_url(request, "settings-webhooks"))


# --- standing decisions: licences and dismissed pairs ---------------------------------------------

@portal_view(role=ADMIN)
def decisions(request: PortalRequest) -> HttpResponse:
    return page(request, "portal/settings/decisions.html", {
        "licences": selectors.licences_of(request.organisation)[:200],
        "pairs": selectors.dismissed_pairs_of(request.organisation)[:200],
    })


@portal_view(role=ADMIN, methods=["POST"])
def licence_revoke(request: PortalRequest, pk: int) -> HttpResponse:
    licence = found(selectors.licence_of(request.organisation, pk))
    review_services.licence_revoke(licence=licence)
    messages.success(request, f"Licence for {licence.holder} revoked; new matches from that source will alert.")
    return HttpResponseRedirect(org_url(request, "settings-decisions"))


@portal_view(role=ADMIN, methods=["POST"])
def pair_delete(request: PortalRequest, pk: int) -> HttpResponse:
    pair = found(selectors.dismissed_pair_of(request.organisation, pk))
    review_services.dismissed_pair_delete(pair=pair)
    messages.success(request, "The pair will be reported again if it is found.")
    return HttpResponseRedirect(org_url(request, "settings-decisions"))
