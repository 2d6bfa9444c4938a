"""Root URLs: the admin, /api/ and /health/."""

from django.contrib import admin
from django.urls import include, path

from api.health import health
from api.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("health/", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "api.errors.json_bad_request"
handler403 = "api.errors.json_forbidden"
handler404 = "api.errors.json_not_found"
handler500 = "api.errors.json_server_error"
