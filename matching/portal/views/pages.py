"""Dashboard, collections and their images, checks."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string

from catalog import services as catalog_services
from catalog.models import ProtectedImage, Role
from catalog.receipts import actor_of
from imgprotect.errors import ServiceError
from matching import protection, selftest
from matching.bulk import selectors as bulk_selectors
from matching.bulk import services as bulk_services
from matching.core.errors import ImageError
from matching.portal import bulk, selectors, services
from matching.portal.presentation import self_test_chart
from matching.portal.access import SESSION_SINCE, PortalRequest, portal_view
from matching.portal.forms import CheckForm, CollectionForm
from matching.portal.views.common import found, org_url, page, paginate, wants_json
from matching.portal.views.review import evidence_context
from matching.uploads import read_and_validate

IMAGES_PER_PAGE = 24
COLLECTIONS_PER_PAGE = 12


@portal_view()
def dashboard(request: PortalRequest) -> HttpResponse:
    raw = request.session.get(SESSION_SINCE.format(request.organisation.pk)) or ""
    since = datetime.fromisoformat(raw) if raw else None
    context = selectors.dashboard(request.organisation, since=since)
    context["bulk"] = bulk.dashboard_context(request.organisation)
    return page(request, "portal/dashboard.html", context)


# --- collections ----------------------------------------------------------------------

@portal_view()
def collections(request: PortalRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:200]
    rows = paginate(request, selectors.collections_of(request.organisation, search=search), COLLECTIONS_PER_PAGE)
    return page(request, "portal/collections.html", {"page_obj": rows, "q": search, "form": CollectionForm()})


@portal_view(role=Role.ADMIN, methods=["GET", "POST"])
def collection_create(request: PortalRequest) -> HttpResponse:
    form = CollectionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            collection = catalog_services.collection_create(organisation=request.organisation, **form.cleaned_data)
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Collection “{collection.name}” created. Add images to protect them.")
            return HttpResponseRedirect(org_url(request, "collection", collection.pk))
    return page(request, "portal/collection_form.html", {"form": form, "creating": True},
                status=400 if request.method == "POST" else 200)


@portal_view()
def collection(request: PortalRequest, pk: int) -> HttpResponse:
    col = found(selectors.collection_of(request.organisation, pk))
    search = request.GET.get("q", "").strip()[:200]
    status = request.GET.get("status", "")
    images = paginate(request, selectors.images_of(col, search=search, status=status), IMAGES_PER_PAGE)
    return page(request, "portal/collection.html", {
        "collection": col, "page_obj": images, "q": search, "status": status,
        "statuses": ProtectedImage.Status.choices, "max_upload_bytes": settings.IMGPROTECT_MAX_UPLOAD_BYTES,
        "bulk": bulk.collection_context(col),
    })


@portal_view(role=Role.ADMIN, methods=["GET", "POST"])
def collection_edit(request: PortalRequest, pk: int) -> HttpResponse:
    col = found(selectors.collection_of(request.organisation, pk))
    form = CollectionForm(request.POST or None, initial={"name": col.name, "description": col.description})
    if request.method == "POST" and form.is_valid():
        try:
            catalog_services.collection_update(collection=col, **form.cleaned_data)
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Collection saved.")
            return HttpResponseRedirect(org_url(request, "collection", col.pk))
    return page(request, "portal/collection_form.html", {"form": form, "collection": col},
                status=400 if request.method == "POST" else 200)


@portal_view(role=Role.ADMIN, methods=["GET", "POST"])
def collection_delete(request: PortalRequest, pk: int) -> HttpResponse:
    col = found(selectors.collection_of(request.organisation, pk))
    if request.method == "POST":
        name = col.name
        receipt = catalog_services.collection_delete(collection=col, actor=actor_of(request))
        messages.success(request, f"Collection “{name}” and its images were deleted. This is the signed receipt.")
        return HttpResponseRedirect(org_url(request, "receipt", receipt.pk))
    return page(request, "portal/confirm_delete.html", {
        "title": f"Delete the collection “{col.name}”?",
        "body": f"Its {col.images.count()} images and their match reports are deleted and leave every index. "
                "This cannot be undone.",
        "cancel_url": org_url(request, "collection", col.pk),
    })


def _upload_result(request: PortalRequest, image: ProtectedImage) -> dict[str, Any]:
    return {"ok": True, "id": image.pk, "key": image.key, "status": image.status,
            "thumb": org_url(request, "image-file", image.pk) + "?size=thumb",
            "url": org_url(request, "image", image.pk), "flags": image.protection_flags}


@portal_view(role=Role.MEMBER, methods=["POST"])
def collection_upload(request: PortalRequest, pk: int) -> HttpResponse:
    """Protect uploaded files; the page's script sends one file per request to show per-file progress."""
    col = found(selectors.collection_of(request.organisation, pk))
    uploads = request.FILES.getlist("file")
    key = request.POST.get("key", "").strip()
    results: list[dict[str, Any]] = []
    for upload in uploads:
        try:
            data, loaded = read_and_validate(upload)
            image = protection.protected_image_add(
                collection=col, key=key if key and len(uploads) == 1 else upload.name or "", data=data, loaded=loaded,
                filename=upload.name)
            image.refresh_from_db()
            results.append({"name": upload.name, **_upload_result(request, image)})
        except ImageError as exc:
            results.append({"name": upload.name, "ok": False, "code": exc.code, "message": exc.reason})
        except ServiceError as exc:
            results.append({"name": upload.name, "ok": False, "code": exc.code, "message": exc.message})
    if not uploads:
        results.append({"name": "", "ok": False, "code": "no_file", "message": "Choose at least one image file."})
    ok = sum(1 for r in results if r["ok"])
    if wants_json(request):
        status = 201 if ok == len(results) else (400 if ok == 0 else 200)
        return JsonResponse({"results": results}, status=status)
    if ok:
        messages.success(request, f"{ok} image{'s' if ok != 1 else ''} added.")
    for r in results:
        if not r["ok"]:
            messages.error(request, f"{r['name'] or 'Upload'}: {r['message']}")
    return HttpResponseRedirect(org_url(request, "collection", col.pk))


# --- protected images --------------------------------------------------------------------

@portal_view()
def image(request: PortalRequest, pk: int) -> HttpResponse:
    img = found(selectors.image_of(request.organisation, pk))
    matches = selectors.matches_of(request.organisation).filter(protected_image=img).order_by("-created")[:50]
    latest = img.self_tests.order_by("-created", "-id").first()
    return page(request, "portal/image.html", {
        "image": img, "matches": matches, "cnn_searched": protection.cnn_searched(img),
        "licences": img.licences.select_related("created_by").order_by("-created"),
        "self_test": latest, "self_test_chart": self_test_chart(latest.results) if latest and latest.results else None,
    })


@portal_view(role=Role.MEMBER, methods=["POST"])
def image_self_test(request: PortalRequest, pk: int) -> HttpResponse:
    """Run the protection self-test (in this request on the embedded default, else on a worker)."""
    img = found(selectors.image_of(request.organisation, pk))
    try:
        test = selftest.selftest_start(image=img, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        test.refresh_from_db()
        if test.status == test.Status.DONE:
            results = test.results or {}
            messages.success(request, f"Self-test done: {results.get('found', 0)} of {results.get('total', 0)} "
                                      "edited copies found.")
        elif test.status == test.Status.FAILED:
            messages.error(request, f"The self-test failed: {test.failure_reason}")
        else:
            messages.info(request, "The self-test is running; reload this page in a minute for its results.")
    return HttpResponseRedirect(org_url(request, "image", img.pk) + "#self-test")


@portal_view(role=Role.MEMBER, methods=["GET", "POST"])
def image_delete(request: PortalRequest, pk: int) -> HttpResponse:
    img = found(selectors.image_of(request.organisation, pk))
    if request.method == "POST":
        key = img.key
        receipt = catalog_services.protected_image_delete(image=img, actor=actor_of(request))
        messages.success(request, f"“{key}” was deleted; it no longer matches anything. This is the signed receipt.")
        return HttpResponseRedirect(org_url(request, "receipt", receipt.pk))
    return page(request, "portal/confirm_delete.html", {
        "title": f"Delete “{img.key}”?",
        "body": "The image leaves every index at once and its match reports are deleted. This cannot be undone.",
        "cancel_url": org_url(request, "image", img.pk),
        "preview": org_url(request, "image-file", img.pk) + "?size=thumb",
    })


# --- checks -----------------------------------------------------------------------------------

@portal_view()
def checks(request: PortalRequest) -> HttpResponse:
    rows = paginate(request, selectors.checks_of(request.organisation).order_by("-created", "-id"), 20)
    return page(request, "portal/checks.html", {
        "page_obj": rows, "form": CheckForm(organisation=request.organisation),
        "max_upload_bytes": settings.IMGPROTECT_MAX_UPLOAD_BYTES,
    })


@portal_view(role=Role.MEMBER, methods=["POST"])
def check_create(request: PortalRequest) -> HttpResponse:
    form = CheckForm(request.POST, request.FILES, organisation=request.organisation)
    error = ""
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            data, loaded = read_and_validate(upload)
            check = services.portal_check_submit(
                organisation=request.organisation, data=data, loaded=loaded, filename=upload.name,
                collection=form.cleaned_data["collection"], found_at=form.cleaned_data["found_at"],
                user=request.user)
        except ImageError as exc:
            error = exc.reason
        except ServiceError as exc:
            error = exc.message
        else:
            url = org_url(request, "check", check.pk)
            if wants_json(request):
                check.refresh_from_db()
                return JsonResponse({"id": check.pk, "url": url, "status": check.status}, status=201)
            return HttpResponseRedirect(url)
    else:
        error = "; ".join(str(e) for errors in form.errors.values() for e in errors)
    if wants_json(request):
        return JsonResponse({"ok": False, "message": error}, status=400)
    messages.error(request, error)
    return HttpResponseRedirect(org_url(request, "checks"))


@portal_view()
def check(request: PortalRequest, pk: int) -> HttpResponse:
    obj = found(selectors.check_of(request.organisation, pk))
    matches = list(selectors.matches_of(request.organisation).filter(source_check=obj).order_by("-score", "-id"))
    context = {"check": obj, "matches": matches, "items": [evidence_context(request, m) for m in matches],
               "candidates": [c for c in (obj.result or {}).get("candidates", []) if not c.get("match")]}
    if request.GET.get("partial"):
        return HttpResponse(render_to_string("portal/_check_result.html", context, request=request))
    return page(request, "portal/check.html", context)


@portal_view(role=Role.ADMIN, methods=["POST"])  # as POST /api/v1/bulk-jobs/ (docs/bulk.md)
def bulk_start(request: PortalRequest, pk: int) -> HttpResponse:
    col = found(selectors.collection_of(request.organisation, pk))
    source = (request.POST.get("source") or "").strip()
    try:
        if not source:
            raise ServiceError("Give a server path or an s3://bucket/prefix.", code="invalid_source")
        job = bulk_services.bulkjob_create(organisation=request.organisation, kind="index", source=source,
                                           collection=col, created_by=request.user)
        messages.success(request, f"Bulk import #{job.pk} from {job.source} started.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return HttpResponseRedirect(org_url(request, "collection", col.pk))


@portal_view(role=Role.VIEWER)
def bulk_progress(request: PortalRequest, pk: int) -> HttpResponse:
    job = found(bulk_selectors.bulkjob_get(organisation=request.organisation, job_id=pk))
    return JsonResponse(bulk.progress(job))
