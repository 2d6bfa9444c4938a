"""Routes under /api/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import messages, oauth, suppressions, views, webhook_endpoints

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("integrations/", views.IntegrationListView.as_view(), name="integration-list"),
    path(
        "integrations/<str:provider>/connect/",
        views.IntegrationConnectView.as_view(),
        name="integration-connect",
    ),
    path(
        "integrations/<str:provider>/test/",
        views.IntegrationTestView.as_view(),
        name="integration-test",
    ),
    path(
        "integrations/<str:provider>/oauth/start/",
        oauth.OAuthStartView.as_view(),
        name="integration-oauth-start",
    ),
    path(
        "integrations/<str:provider>/",
        views.IntegrationDetailView.as_view(),
        name="integration-detail",
    ),
    path("audit/", views.AuditListView.as_view(), name="audit-list"),
    path("messages/", messages.MessageListCreateView.as_view(), name="message-list"),
    path("messages/bulk/", messages.MessageBulkView.as_view(), name="message-bulk"),
    path("messages/<int:message_id>/", messages.MessageDetailView.as_view(), name="message-detail"),
    path(
        "messages/<int:message_id>/retry/",
        messages.MessageRetryView.as_view(),
        name="message-retry",
    ),
    path(
        "messages/<int:message_id>/cancel/",
        messages.MessageCancelView.as_view(),
        name="message-cancel",
    ),
    path(
        "calendar/bookings/<str:booking_id>/",
        messages.BookingView.as_view(),
        name="booking-detail",
    ),
    path("suppressions/", suppressions.SuppressionListView.as_view(), name="suppression-list"),
    path(
        "suppressions/<int:suppression_id>/",
        suppressions.SuppressionDetailView.as_view(),
        name="suppression-detail",
    ),
    path(
        "webhook-endpoints/",
        webhook_endpoints.WebhookEndpointListView.as_view(),
        name="webhook-endpoint-list",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/",
        webhook_endpoints.WebhookEndpointDetailView.as_view(),
        name="webhook-endpoint-detail",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/rotate-secret/",
        webhook_endpoints.WebhookEndpointRotateView.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/deliveries/",
        webhook_endpoints.EventDeliveryListView.as_view(),
        name="webhook-delivery-list",
    ),
    path(
        "webhook-endpoints/<int:endpoint_id>/deliveries/<int:delivery_id>/redeliver/",
        webhook_endpoints.EventRedeliverView.as_view(),
        name="webhook-delivery-redeliver",
    ),
]
