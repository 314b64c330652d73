from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from catalog.api import CollectionViewSet, OrganisationView
from catalog.receipts_api import DeletionReceiptViewSet
from imgprotect.views import admin_image_file
from matching.api import CheckViewSet, MatchViewSet
from matching.bulk.api import BulkJobViewSet, WatchViewSet
from matching.hashlists_api import CollectionHashesView, HashListViewSet, HmaLookupView, HmaRawLookupView
from matching.cases_api import CaseViewSet
from matching.protection_api import ProtectedImageViewSet

router = DefaultRouter()
router.register("collections", CollectionViewSet, basename="collection")
router.register("images", ProtectedImageViewSet, basename="image")
router.register("checks", CheckViewSet, basename="check")
router.register("matches", MatchViewSet, basename="match")
router.register("bulk-jobs", BulkJobViewSet, basename="bulk-job")
router.register("hash-lists", HashListViewSet, basename="hash-list")
router.register("cases", CaseViewSet, basename="case")
router.register("receipts", DeletionReceiptViewSet, basename="receipt")
router.register("watches", WatchViewSet, basename="watch")


def healthz(request):
    return JsonResponse({"status": "ok"})


# Under /api/ every answer is JSON in the API's error shape (imgprotect/api.py), even for a URL no
# route matches (an id that is not a number: /api/v1/images/1.5/) or an unhandled error.
def not_found(request, exception):
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "not_found", "detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "server_error", "detail": "Internal server error."}, status=500)
    return defaults.server_error(request)


handler404 = not_found
handler500 = server_error


urlpatterns = [
    path("admin/files/<str:kind>/<int:pk>/", admin_image_file, name="admin-image-file"),
    path("admin/", admin.site.urls),
    path("api/v1/organisation/", OrganisationView.as_view(), name="organisation"),
    path("api/v1/collections/<str:pk>/hashes/", CollectionHashesView.as_view(), name="collection-hashes"),
    path("api/v1/", include(router.urls)),
    # Hasher-Matcher-Actioner's matching API, at HMA's own paths so its clients work unchanged.
    path("m/lookup", HmaLookupView.as_view(), name="hma-lookup"),
    path("m/raw_lookup", HmaRawLookupView.as_view(), name="hma-raw-lookup"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz),
    # The portal, at the site root (login, /o/<org>/...); /admin/ and /api/ above keep precedence.
    path("", include("matching.portal.urls")),
]
