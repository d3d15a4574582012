"""What every request to the dashboard must show before it is answered.

The dashboard acts with its user's key, so a request is served only when it carries the random
token printed with the URL, names the dashboard's own address as its Host (a DNS-rebinding page
names its own), and, when a browser says where it comes from (Origin, Sec-Fetch-Site), comes
from the dashboard's own page. A request that changes something (POST) must carry the token in
a header, which no other site's page can set without a CORS preflight the dashboard never grants.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

TOKEN_HEADER = "X-Deltaflow-Token"


class Refused(Exception):
    """The request may not be served; the message says why, for the response's body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Guard:
    """The checks for a dashboard at http://127.0.0.1:`port`/ with secret `token`."""

    def __init__(self, port: int, token: str) -> None:
        self.token = token
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    def check(self, method: str, headers: Mapping[str, str], query_token: str | None) -> None:
        """Returns if the request may be served; Refused otherwise."""
        host = headers.get("Host", "")
        if host not in self.hosts:
            raise Refused(421, f"this dashboard answers to {' or '.join(sorted(self.hosts))} "
                               f"only, not to Host {host[:100]!r}")
        origin = headers.get("Origin")
        if origin is not None and origin not in self.origins:
            raise Refused(403, "requests from other sites' pages are refused")
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise Refused(403, "requests from other sites' pages are refused")
        header_token = headers.get(TOKEN_HEADER)
        if method != "GET" and (origin is None or header_token is None):
            raise Refused(403, f"a {method} needs the Origin and {TOKEN_HEADER} headers "
                               "the dashboard's own page sends")
        given = header_token if header_token is not None else query_token
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Refused(401, "this request lacks the dashboard's token: open the URL that "
                               "`deltaflow dashboard` printed, with its ?token=")
