"""The portal's URLs. Organisation pages live under /o/<org>/ (see access.portal_view)."""
from django.urls import include, path

from matching.portal.views import accounts, files, pages, review, settings

app_name = "portal"

org_patterns = [
    path("", pages.dashboard, name="dashboard"),
    path("collections/", pages.collections, name="collections"),
    path("collections/new/", pages.collection_create, name="collection-create"),
    path("collections/<int:pk>/", pages.collection, name="collection"),
    path("collections/<int:pk>/edit/", pages.collection_edit, name="collection-edit"),
    path("collections/<int:pk>/delete/", pages.collection_delete, name="collection-delete"),
    path("collections/<int:pk>/upload/", pages.collection_upload, name="collection-upload"),
    path("images/<int:pk>/", pages.image, name="image"),
    path("images/<int:pk>/delete/", pages.image_delete, name="image-delete"),
    path("images/<int:pk>/file/", files.image_file, name="image-file"),
    path("checks/", pages.checks, name="checks"),
    path("checks/new/", pages.check_create, name="check-create"),
    path("checks/<int:pk>/", pages.check, name="check"),
    path("checks/<int:pk>/file/", files.check_file, name="check-file"),
    path("matches/", review.desk, name="desk"),
    path("matches/review/", review.desk_bulk, name="desk-bulk"),
    path("matches/<int:pk>/", review.match, name="match"),
    path("matches/<int:pk>/review/", review.match_review_view, name="match-review"),
    path("matches/<int:pk>/evidence.png", files.match_evidence, name="match-evidence"),
    path("matches/<int:pk>/export/", review.match_export, name="match-export"),
    path("settings/", settings.index, name="settings"),
    path("settings/members/", settings.members, name="settings-members"),
    path("settings/members/invite/", settings.member_invite, name="settings-invite"),
    path("settings/members/<int:pk>/role/", settings.member_role, name="settings-member-role"),
    path("settings/members/<int:pk>/remove/", settings.member_remove, name="settings-member-remove"),
    path("settings/invitations/<int:pk>/revoke/", settings.invitation_revoke, name="settings-invitation-revoke"),
    path("settings/api-keys/", settings.api_keys, name="settings-api-keys"),
    path("settings/api-keys/<int:pk>/revoke/", settings.api_key_revoke, name="settings-api-key-revoke"),
    path("settings/alerts/", settings.alerts, name="settings-alerts"),
    path("settings/alerts/<int:pk>/", settings.alerts_save, name="settings-alerts-save"),
    path("settings/thresholds/", settings.thresholds, name="settings-thresholds"),
    path("settings/thresholds/<int:pk>/", settings.thresholds_save, name="settings-thresholds-save"),
    path("settings/webhooks/", settings.webhooks, name="settings-webhooks"),
    path("settings/webhooks/<int:pk>/", settings.webhook, name="settings-webhook"),
    path("settings/webhooks/<int:pk>/test/", settings.webhook_test, name="settings-webhook-test"),
    path("settings/webhooks/<int:pk>/rotate/", settings.webhook_rotate, name="settings-webhook-rotate"),
    path("settings/webhooks/<int:pk>/delete/", settings.webhook_delete, name="settings-webhook-delete"),
    path("settings/decisions/", settings.decisions, name="settings-decisions"),
    path("settings/licences/<int:pk>/revoke/", settings.licence_revoke, name="settings-licence-revoke"),
    path("settings/dismissed/<int:pk>/delete/", settings.pair_delete, name="settings-pair-delete"),
]

urlpatterns = [
    path("", accounts.home, name="home"),
    path("login/", accounts.login_view, name="login"),
    path("logout/", accounts.logout_view, name="logout"),
    path("password-reset/", accounts.password_reset, name="password-reset"),
    path("password-reset/sent/", accounts.password_reset_done, name="password-reset-done"),
    path("password-reset/<uidb64>/<token>/", accounts.password_reset_confirm, name="password-reset-confirm"),
    path("password-reset/done/", accounts.password_reset_complete, name="password-reset-complete"),
    path("account/password/", accounts.password_change, name="password-change"),
    path("account/password/done/", accounts.password_change_done, name="password-change-done"),
    path("invite/<str:token>/", accounts.invitation, name="invitation"),
    path("o/<slug:org>/", include(org_patterns)),
]
