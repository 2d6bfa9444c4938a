"""The product URLs plus `bench/noop/`: same auth and permission, no work, 202."""

from django.urls import path
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import IsOrgMember
from corbi.urls import handler400, handler403, handler404, handler500, urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


class NoopView(APIView):
    """Authenticates, resolves X-Org-ID membership, parses the JSON body, answers 202."""

    permission_classes = [IsOrgMember]

    def post(self, request: Request) -> Response:
        _ = request.data
        return Response({"status": "ok", "ok": True}, status=status.HTTP_202_ACCEPTED)


urlpatterns = [*urlpatterns, path("bench/noop/", NoopView.as_view())]
