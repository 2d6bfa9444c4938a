"""Root URLs: the admin, /api/, the provider receipt receivers (/webhooks/), the OAuth
callbacks (/oauth/) and /health/."""

from django.contrib import admin
from django.urls import include, path

from api.health import health
from api.metrics import metrics_view
from api.oauth import callback as oauth_callback
from api.receipts import instagram, sendgrid_events, twilio_status

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("webhooks/twilio/<str:key>/status/", twilio_status, name="webhook-twilio"),
    path("webhooks/sendgrid/<str:key>/events/", sendgrid_events, name="webhook-sendgrid"),
    path("webhooks/instagram/", instagram, name="webhook-instagram"),
    path("oauth/<str:segment>/callback/", oauth_callback, name="oauth-callback"),
    path("health/", health, name="health"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "api.errors.json_bad_request"
handler403 = "api.errors.json_forbidden"
handler404 = "api.errors.json_not_found"
handler500 = "api.errors.json_server_error"
