"""Who may read and who may act: API tokens from API_READ_TOKENS and API_ADMIN_TOKENS.

A token is sent as `Authorization: Bearer <token>` (API clients, Prometheus), or as
the password of HTTP Basic with any user name (a browser on the operator's page asks
once and then sends it with every request of that page).
"""

import base64
import binascii
import copy
import enum
import functools
import hashlib
import hmac

from flask import Response, current_app, g, request

from app.web.api import problem_responses
from app.web.errors import problem

# The OpenAPI security scheme every guarded operation names (declared in create_app's
# spec options); `requires` adds it, with the 401 and 403, to the operation's doc.
SECURITY_SCHEME = "bearerToken"


class Role(enum.IntEnum):
    READ = 1  # may read transactions, metrics and the operator's page
    ADMIN = 2  # may also act: re-drive


class Tokens:
    """The configured tokens; `find()` compares in constant time and never logs a token."""

    def __init__(self, read: list[str], admin: list[str]):
        # Compared as digests: the comparison takes the same time whatever the
        # length of the token sent or of the tokens configured.
        # Each with a name for the logs that holds nothing of the token: its place in
        # the variable, as an operator listed it ("API_ADMIN_TOKENS #2").
        self._digests = [
            (_digest(t), Role.ADMIN, f"API_ADMIN_TOKENS #{n}") for n, t in enumerate(admin, 1)
        ] + [(_digest(t), Role.READ, f"API_READ_TOKENS #{n}") for n, t in enumerate(read, 1)]

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def find(self, token: str | None) -> tuple[Role, str] | None:
        """The role and the log name of this token, or None for a missing or unknown one."""
        if not token:
            return None
        sent = _digest(token)
        found = None
        for digest, role, name in self._digests:  # every one, so timing says nothing
            if hmac.compare_digest(sent, digest) and found is None:
                found = (role, name)
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_from_header(authorization: str | None) -> tuple[str, str | None]:
    """(scheme, token) from an Authorization header: "bearer" or "basic"; token None if absent."""
    if not authorization:
        return "", None
    scheme, _, credentials = authorization.strip().partition(" ")
    scheme = scheme.lower()
    credentials = credentials.strip()
    if scheme == "bearer":
        return scheme, credentials or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return scheme, None
        _user, _, password = decoded.partition(":")
        return scheme, password or None
    return scheme, None


# Browsers send cached Basic credentials with any request to this host, a forged
# cross-site form POST included; a form cannot set this header, so an action
# authenticated by Basic must carry it (the operator's page sends it).
ACTION_HEADER = "X-Requested-With"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def requires(role: Role, challenge: str = "Bearer"):
    """A view decorator: 401 without a known token, 403 with one of too small a role.

    With no token configured at all, everything is open (start-up warns). `challenge`
    is the scheme named in WWW-Authenticate: Bearer for the API, Basic for pages, so
    that a browser asks for the token once.
    """

    refusals = {401: "No token, or not one of ours (when tokens are configured)."}
    if role is Role.ADMIN:
        refusals[403] = "A read token on an action; or Basic without X-Requested-With."

    def decorator(view):
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            refusal = refuse(role, challenge)
            return refusal if refusal is not None else view(*args, **kwargs)

        # flask-smorest reads `_apidoc`: the spec says which operations need a token.
        apidoc = copy.deepcopy(getattr(view, "_apidoc", {}))
        manual = apidoc.setdefault("manual_doc", {})
        manual["security"] = [{SECURITY_SCHEME: []}]
        manual.setdefault("responses", {}).update(problem_responses(refusals))
        guarded._apidoc = apidoc
        return guarded

    return decorator


def refuse(role: Role, challenge: str = "Bearer") -> Response | None:
    """The refusal for this request, or None if it may go on."""
    tokens: Tokens = current_app.extensions["api_tokens"]
    if not tokens.configured:
        return None
    scheme, token = token_from_header(request.headers.get("Authorization"))
    found = tokens.find(token)
    if found is None:
        detail = "Send a token: Authorization: Bearer <token>."
        if challenge == "Basic":
            detail = "Sign in with an API token as the password (any user name)."
        if token:
            detail = "The token is not one of ours."
        realm = 'realm="webhook transaction service"'
        return problem(
            401, "Unauthorized", detail, headers={"WWW-Authenticate": f"{challenge} {realm}"}
        )
    granted, g.token_name = found
    g.role = granted
    if granted < role:
        return problem(403, "Forbidden", "This token may read, not act; use an admin token.")
    if (
        scheme == "basic"
        and request.method not in SAFE_METHODS
        and not request.headers.get(ACTION_HEADER)
    ):
        return problem(
            403, "Forbidden", f"An action authenticated by Basic must send {ACTION_HEADER}."
        )
    return None
