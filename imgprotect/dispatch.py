"""Enqueue Celery tasks by name, after commit, so that services never import worker modules.

Tasks import services (``workers/``); services only name the task they queue.
The lookup goes through the app's task registry, so the task's own
``apply_async`` runs: it honours ``CELERY_TASK_ALWAYS_EAGER`` (the embedded
default runs tasks in-process), which ``app.send_task`` would not. Enqueueing
after commit means a worker never sees an uncommitted row (docs/coding-habits.md, habit 2).
"""
from __future__ import annotations

import functools
import importlib

from celery import Task
from django.db import transaction

from imgprotect.celery import WORKER_MODULES, app


@functools.cache
def _register_worker_tasks() -> None:
    # A worker imports these at start-up (the app's ``include``); a web process or a command
    # line does it here, the first time it queues something.
    for module in WORKER_MODULES:
        importlib.import_module(module)


def task(name: str) -> Task:
    """The registered task ``name`` (``workers.tasks.run_check``); KeyError for an unknown name."""
    _register_worker_tasks()
    return app.tasks[name]


def enqueue_on_commit(name: str, *args: object, countdown: float | None = None) -> None:
    """Queue task ``name`` with ``args`` (ids, JSON-serialisable) once the current transaction commits;
    with ``countdown``, to run that many seconds later (eager mode runs it at once)."""
    if countdown:
        transaction.on_commit(lambda: task(name).apply_async(args, countdown=countdown))
    else:
        transaction.on_commit(lambda: task(name).delay(*args))
