from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from catalog.api import CollectionViewSet, OrganisationView
from imgprotect.views import admin_image_file
from matching.api import CheckViewSet, MatchViewSet
from matching.bulk.api import BulkJobViewSet, WatchViewSet
from matching.protection_api import ProtectedImageViewSet

router = DefaultRouter()
router.register("collections", CollectionViewSet, basename="collection")
router.register("images", ProtectedImageViewSet, basename="image")
router.register("checks", CheckViewSet, basename="check")
router.register("matches", MatchViewSet, basename="match")
router.register("bulk-jobs", BulkJobViewSet, basename="bulk-job")
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
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz),
    # The portal, at the site root (login, /o/<org>/...); /admin/ and /api/ above keep precedence.
    path("", include("matching.portal.urls")),
]
