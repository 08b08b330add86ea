"""The base of the /openai/ views: OpenAI's error shape, Easel's tokens, the API's throttles."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

from accounts.authentication import TokenAuthentication

from .errors import openai_exception_handler


# Left out of Easel's OpenAPI schema (/api/v1/schema/): these endpoints follow OpenAI's
# own contract, errors included, which OpenAI's published specification describes;
# docs/openai.md says what Easel makes of each parameter.
@extend_schema(exclude=True)
class OpenAIView(APIView):
    # An API key only: no session (a browser's cookie must not spend its owner's quota
    # from another site, and OpenAI's clients send no CSRF token).
    authentication_classes = [TokenAuthentication]
    # Throttles: REST_FRAMEWORK's defaults, as for the REST API's creates.

    def get_exception_handler(self):
        return openai_exception_handler
