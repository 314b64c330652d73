"""The Celery application. Settings come from Django's (CELERY_* names)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imgprotect.settings")

# The task modules: a worker imports them at start-up; ``imgprotect.dispatch`` imports them
# in any other process before it queues a task by name.
WORKER_MODULES = ("workers.tasks", "workers.portal", "workers.bulk")

app = Celery("imgprotect", include=list(WORKER_MODULES))
app.config_from_object("django.conf:settings", namespace="CELERY")
