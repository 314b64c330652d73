"""Deletion receipts in the portal (catalog/receipts.py): an organisation's list under settings (admins), one
receipt with its download (members: they may delete images, so they see what a deletion did), and the
receipts of organisations a user deleted, on their account (nobody is a member of a deleted organisation)."""
from __future__ import annotations

from typing import Any

from django.http import HttpResponse

from catalog import receipts
from catalog.models import DeletionReceipt, Role
from matching.portal.access import AccountRequest, PortalRequest, account_view, portal_view
from matching.portal.views.common import found, page, paginate

RECEIPTS_PER_PAGE = 25
FILES_SHOWN = 200  # a collection's receipt can list thousands of files: the download has them all


def receipt_context(receipt: DeletionReceipt) -> dict[str, Any]:
    body = receipt.body
    files = body.get("files", [])
    return {
        "receipt": receipt, "body": body, "files": files[:FILES_SHOWN], "files_hidden": max(0, len(files) - FILES_SHOWN),
        "rows": sorted(body.get("rows", {}).items()), "derived": body.get("derived", {}),
        "index_entries": body.get("index_entries", {}),
        "verification": receipts.receipt_verify(receipts.receipt_document(receipt)),
    }


@portal_view(role=Role.ADMIN)
def receipt_list(request: PortalRequest) -> HttpResponse:
    rows = paginate(request, receipts.receipt_list(organisation_id=request.organisation.pk), RECEIPTS_PER_PAGE)
    return page(request, "portal/settings/receipts.html", {"page_obj": rows})


@portal_view(role=Role.MEMBER)
def receipt(request: PortalRequest, pk: int) -> HttpResponse:
    found_receipt = found(receipts.receipt_get(organisation_id=request.organisation.pk, receipt_id=pk))
    return page(request, "portal/receipt.html", receipt_context(found_receipt))


@portal_view(role=Role.MEMBER)
def receipt_download(request: PortalRequest, pk: int) -> HttpResponse:
    return receipts.receipt_download(found(receipts.receipt_get(organisation_id=request.organisation.pk,
                                                                receipt_id=pk)))


@account_view()
def account_receipts(request: AccountRequest) -> HttpResponse:
    rows = paginate(request, receipts.receipts_of_deleted_organisations(user=request.user), RECEIPTS_PER_PAGE)
    return page(request, "portal/account/receipts.html", {"page_obj": rows})


@account_view()
def account_receipt_download(request: AccountRequest, pk: int) -> HttpResponse:
    return receipts.receipt_download(found(receipts.receipts_of_deleted_organisations(user=request.user)
                                           .filter(pk=pk).first()))
