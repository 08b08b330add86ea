"""Content-Security-Policy on every HTML page.

Easel's pages load scripts and styles only from their own static files (no inline
script, no inline style, no CDN), so a strict policy costs nothing and turns an
injected `<script>` or `style=` into a no-op.

Register after SecurityMiddleware:  "config.csp.ContentSecurityPolicyMiddleware".

Exempt prefixes (EASEL_CSP_EXEMPT_PREFIXES, default below): drf-spectacular's
Swagger UI and ReDoc pages start themselves with an inline script. The Django admin
(5.2) runs under this policy: its scripts are files and it passes data through
data-* attributes and json_script.
"""
from __future__ import annotations

from django.conf import settings

POLICY = "; ".join([
    "default-src 'self'",
    "img-src 'self' data: blob:",
    "script-src 'self'",
    "style-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'none'",
    "form-action 'self'",
])

DEFAULT_EXEMPT_PREFIXES = ("/api/docs/", "/api/redoc/")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = getattr(settings, "EASEL_CSP_POLICY", POLICY)
        self.exempt = tuple(getattr(settings, "EASEL_CSP_EXEMPT_PREFIXES", DEFAULT_EXEMPT_PREFIXES))

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" in response:
            return response  # a view that set its own policy knows better
        if request.path.startswith(self.exempt):
            return response
        if response.get("Content-Type", "").split(";")[0].strip() == "text/html":
            response["Content-Security-Policy"] = self.policy
        return response
