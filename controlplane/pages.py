"""Security headers for every HTML page the service serves, keyed on the response's content type.

Any response whose Content-Type is text/html gets them, whichever face or resource made it, so a
later page (console, terminal, pad) is covered without doing anything.
"""

from __future__ import annotations

import falcon

# Pages load their scripts and styles from this origin only; Swagger UI sets element styles and uses
# data: URIs for its icons. No page may be framed (clickjacking), nor leak its URL to other sites.
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class PageHeaders:
    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        if (resp.content_type or "").split(";")[0].strip().lower() == "text/html":
            for name, value in HTML_HEADERS.items():
                resp.set_header(name, value)
