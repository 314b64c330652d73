from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from catalog.api import CollectionViewSet, OrganisationView
from imgprotect.views import admin_image_file
from matching.api import CheckViewSet, MatchViewSet
from matching.bulk.api import BulkJobViewSet
from matching.protection_api import ProtectedImageViewSet

router = DefaultRouter()
router.register("collections", CollectionViewSet, basename="collection")
router.register("images", ProtectedImageViewSet, basename="image")
router.register("checks", CheckViewSet, basename="check")
router.register("matches", MatchViewSet, basename="match")
router.register("bulk-jobs", BulkJobViewSet, basename="bulk-job")


def healthz(request):
    return JsonResponse({"status": "ok"})


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
