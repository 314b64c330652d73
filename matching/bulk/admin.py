from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from imgprotect.errors import ServiceError
from matching.bulk import services, watches
from matching.bulk.models import BulkJob, BulkJobError, Watch


def progress_bar(job: BulkJob) -> str:
    share = job.progress
    if share is None:
        return "—"
    eta = f", {job.eta_seconds:.0f} s left" if job.eta_seconds is not None else ""
    rate = f", {job.rate:.0f}/s" if job.rate else ""
    return format_html(
        '<progress value="{}" max="1000" style="width:8em"></progress> {}% ({}/{}{}{})',
        int(share * 1000), int(share * 100), job.finished_count, job.total or 0, rate, eta,
    )


@admin.register(BulkJob)
class BulkJobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "organisation", "collection", "status", "progress_column", "done", "failed",
                    "skipped", "match_reports", "watch", "created", "finished"]
    list_filter = ["status", "kind", "organisation"]
    search_fields = ["source", "spark_app_id"]
    list_select_related = ["organisation", "collection"]
    readonly_fields = ["organisation", "collection", "kind", "source", "status", "options", "progress_column",
                       "total", "done", "failed", "errors_link", "skipped", "matched", "match_reports", "rate",
                       "spark_app_id", "driver_pid", "attempts", "error", "log_tail_block", "created_by", "created",
                       "started", "finished", "heartbeat", "watch"]
    exclude = ["log_tail", "matches"]
    actions = ["cancel", "resume"]

    def has_add_permission(self, request):
        return False  # jobs come from the command line and the API, which validate the source

    @admin.display(description="Progress")
    def progress_column(self, obj: BulkJob) -> str:
        return progress_bar(obj)

    @admin.display(description="Per-file errors")
    def errors_link(self, obj: BulkJob) -> str:
        url = reverse("admin:bulk_bulkjoberror_changelist") + f"?job__id__exact={obj.pk}"
        return format_html('<a href="{}">{} file(s)</a>', url, obj.errors.count())

    @admin.display(description="Log (tail)")
    def log_tail_block(self, obj: BulkJob) -> str:
        return format_html('<pre style="max-height:30em;overflow:auto;white-space:pre-wrap">{}</pre>', obj.log_tail)

    @admin.action(description="Cancel selected jobs")
    def cancel(self, request, queryset):
        self._each(request, queryset, services.bulkjob_cancel, "Cancelled")

    @admin.action(description="Resume selected jobs (only missing keys)")
    def resume(self, request, queryset):
        self._each(request, queryset, services.bulkjob_resume, "Resumed")

    def _each(self, request, queryset, service, verb: str) -> None:
        done = 0
        for job in queryset:
            try:
                service(job=job)
                done += 1
            except ServiceError as exc:
                messages.warning(request, f"Job {job.pk}: {exc.message}")
        if done:
            messages.success(request, f"{verb} {done} job(s).")


@admin.register(BulkJobError)
class BulkJobErrorAdmin(admin.ModelAdmin):
    list_display = ["key", "code", "reason", "job"]
    list_filter = ["code"]
    search_fields = ["key", "reason"]
    readonly_fields = ["job", "key", "code", "reason"]
    list_select_related = ["job"]

    def has_add_permission(self, request):
        return False


@admin.register(Watch)
class WatchAdmin(admin.ModelAdmin):
    list_display = ["id", "source", "organisation", "collection", "schedule", "enabled", "state_column", "last_run",
                    "next_run"]
    list_filter = ["enabled", "schedule", "organisation"]
    search_fields = ["source"]
    list_select_related = ["organisation", "collection", "last_job"]
    readonly_fields = ["organisation", "source", "collection", "state_column", "last_run", "last_job", "last_error",
                       "runs_link", "created_by", "created"]
    fields = ["organisation", "source", "collection", "schedule", "enabled", "next_run", "state_column", "last_run",
              "last_job", "last_error", "runs_link", "created_by", "created"]
    actions = ["pause", "resume"]

    def has_add_permission(self, request):
        return False  # the API and the portal validate the source against the organisation's roots

    @admin.display(description="State")
    def state_column(self, obj: Watch) -> str:
        state, reason = obj.state_and_reason
        return format_html('<strong>{}</strong> <span title="{}">{}</span>', state, reason, reason[:120])

    @admin.display(description="Runs")
    def runs_link(self, obj: Watch) -> str:
        url = reverse("admin:bulk_bulkjob_changelist") + f"?watch__id__exact={obj.pk}"
        return format_html('<a href="{}">{} run(s)</a>', url, obj.runs.count())

    @admin.action(description="Pause selected watches")
    def pause(self, request, queryset):
        for watch in queryset:
            watches.watch_update(watch=watch, enabled=False)
        messages.success(request, f"Paused {len(queryset)} watch(es).")

    @admin.action(description="Resume selected watches (run at the next beat)")
    def resume(self, request, queryset):
        for watch in queryset:
            watches.watch_update(watch=watch, enabled=True)
        messages.success(request, f"Resumed {len(queryset)} watch(es).")
