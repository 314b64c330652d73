from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "matching.portal"
    label = "portal"
    verbose_name = "Portal"
