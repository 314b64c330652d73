"""Log in and out, password reset and change, invitations, and the organisation chooser."""
from __future__ import annotations

from django.conf import settings as django_settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_http_methods

from catalog import services
from imgprotect import ratelimit
from imgprotect.errors import ServiceError
from matching.portal import selectors
from matching.portal.access import SESSION_ORG, AccountRequest, account_view
from matching.portal.forms import SignupForm

class _LoginView(auth_views.LoginView):
    """Login with a per-address cap on attempts (password spraying); django-axes locks a user
    name per address after repeated failures (imgprotect/ratelimit.py, docs/security.md)."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        wait = ratelimit.hit("login-ip", ratelimit.client_ip(request), django_settings.IMGPROTECT_LOGIN_RATE_PER_IP)
        if wait:
            return ratelimit.too_many(request, wait, title="Too many login attempts",
                                      message="Too many logins were tried from your network.")
        return super().post(request, *args, **kwargs)


class _PasswordResetView(auth_views.PasswordResetView):
    """Password reset, throttled per client address and per e-mail address asked for, so the
    form cannot be used to flood an inbox."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        wait = ratelimit.hit("password-reset-ip", ratelimit.client_ip(request),
                             django_settings.IMGPROTECT_PASSWORD_RESET_RATE_PER_IP)
        if wait:
            return self._too_many(wait)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        wait = ratelimit.hit("password-reset-address", form.cleaned_data["email"].strip().lower(),
                             django_settings.IMGPROTECT_PASSWORD_RESET_RATE_PER_ADDRESS)
        if wait:
            return self._too_many(wait)
        return super().form_valid(form)

    def _too_many(self, wait: int) -> HttpResponse:
        return ratelimit.too_many(self.request, wait, title="Too many reset requests",
                                  message="Reset links were asked for too often. A link already sent still works.")


login_view = _LoginView.as_view(template_name="portal/account/login.html", redirect_authenticated_user=True)
logout_view = auth_views.LogoutView.as_view()
password_reset = _PasswordResetView.as_view(
    template_name="portal/account/password_reset_form.html",
    email_template_name="portal/email/password_reset.txt",
    html_email_template_name="portal/email/password_reset.html",
    subject_template_name="portal/email/password_reset_subject.txt",
    success_url=reverse_lazy("portal:password-reset-done"),
)
password_reset_done = auth_views.PasswordResetDoneView.as_view(
    template_name="portal/account/password_reset_done.html")
password_reset_confirm = auth_views.PasswordResetConfirmView.as_view(
    template_name="portal/account/password_reset_confirm.html",
    success_url=reverse_lazy("portal:password-reset-complete"),
)
password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="portal/account/password_reset_complete.html")
_password_change = auth_views.PasswordChangeView.as_view(
    template_name="portal/account/password_change.html", success_url=reverse_lazy("portal:password-change-done"))
_password_change_done = auth_views.PasswordChangeDoneView.as_view(
    template_name="portal/account/password_change_done.html")


@account_view(methods=["GET", "POST"])
def password_change(request: AccountRequest) -> HttpResponseBase:
    return _password_change(request)


@account_view()
def password_change_done(request: AccountRequest) -> HttpResponseBase:
    return _password_change_done(request)


@account_view()
def home(request: AccountRequest) -> HttpResponse:
    """Send people to the organisation they used last, or let them pick one."""
    memberships = list(selectors.memberships_of(request.user))
    last = request.session.get(SESSION_ORG)
    chosen = next((m for m in memberships if m.organisation.slug == last), None)
    if chosen is None and len(memberships) == 1:
        chosen = memberships[0]
    if chosen is not None:
        return redirect("portal:dashboard", chosen.organisation.slug)
    return render(request, "portal/account/organisations.html", {"memberships": memberships})


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Accept an invitation: logged in, in one click; otherwise by creating an account (or logging in first)."""
    invite = services.invitation_for_token(token)
    if invite is None or not invite.is_open:
        return render(request, "portal/account/invitation.html", {"invalid": True}, status=404)
    if request.user.is_authenticated and not services.invitation_is_for(invitation=invite, user=request.user):
        # Bound to the invited address: another account holding the link may not use it.
        return render(request, "portal/account/invitation.html", {"invite": invite, "wrong_account": True},
                      status=403)
    form = SignupForm(request.POST or None) if not request.user.is_authenticated else None
    if request.method == "POST":
        try:
            if request.user.is_authenticated:
                services.invitation_accept(token=token, user=request.user)
            elif form is not None and form.is_valid():
                user = services.invitation_signup(token=token, username=form.cleaned_data["username"],
                                                  password=form.cleaned_data["password1"])
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            else:
                return render(request, "portal/account/invitation.html", {"invite": invite, "form": form},
                              status=400)
        except ServiceError as exc:
            if form is not None:
                form.add_error(None, exc.message)
            else:
                messages.error(request, exc.message)
            return render(request, "portal/account/invitation.html", {"invite": invite, "form": form}, status=400)
        messages.success(request, f"Welcome to {invite.organisation.name}.")
        return HttpResponseRedirect(reverse("portal:dashboard", args=[invite.organisation.slug]))
    login_url = reverse("portal:login") + "?next=" + reverse("portal:invitation", args=[token])
    return render(request, "portal/account/invitation.html", {"invite": invite, "form": form,
                                                               "login_url": login_url})
