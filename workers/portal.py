"""Thin Celery tasks for the portal: alert digests and webhook deliveries.

Webhook retries are not Celery retries: each attempt records its outcome and
the next due time on the delivery row, and ``retry_webhook_deliveries`` (beat,
every 30 s) sends what is due. Retries thus survive worker restarts, are
bounded by IMGPROTECT_WEBHOOK_MAX_ATTEMPTS, and show in the delivery log.
"""
from __future__ import annotations

import logging

from celery import shared_task

from matching.alerts import match_digest_send
from matching.webhooks import webhook_deliveries_due, webhook_delivery_attempt

log = logging.getLogger(__name__)


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=30, retry_backoff_max=600,
             retry_jitter=True, max_retries=5)
def send_alert_digests(frequency: str) -> int:
    sent = match_digest_send(frequency=frequency)
    log.info("%s digest: %s e-mail(s) sent", frequency, sent)
    return sent


@shared_task(acks_late=True)
def deliver_webhook(delivery_id: int) -> str | None:
    """One attempt; the delivery row records the outcome and the next retry, if any."""
    delivery = webhook_delivery_attempt(delivery_id=delivery_id)
    return delivery.status if delivery else None


@shared_task
def retry_webhook_deliveries() -> int:
    due = webhook_deliveries_due()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)
