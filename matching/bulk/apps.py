from django.apps import AppConfig


class BulkConfig(AppConfig):
    name = "matching.bulk"
    label = "bulk"
    verbose_name = "Bulk jobs"
