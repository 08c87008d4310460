"""Who an HTTP request comes from: basic or bearer credentials checked against the config.

A request without credentials is anonymous (``access.anonymous`` decides what it may do);
wrong credentials are refused outright. Secrets are read once at start, compared in constant
time, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from citytwin.gateway.config import HttpSection


class BadCredentials(Exception):
    """Credentials were given and are wrong (401, whatever the anonymous role allows)."""


class HttpAuth:
    def __init__(self, section: HttpSection) -> None:
        self.scheme = section.auth
        self._secrets = {name: user.read_secret().encode() for name, user in section.users.items()}

    @property
    def challenge(self) -> str:
        return 'Basic realm="citytwin"' if self.scheme == "basic" else 'Bearer realm="citytwin"'

    def identify(self, authorization: str | None) -> str | None:
        """The operator name, or None (anonymous); raises BadCredentials."""
        if self.scheme == "none" or not authorization:
            return None
        kind, _, value = authorization.partition(" ")
        if self.scheme == "basic" and kind.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise BadCredentials("malformed basic credentials") from None
            secret = self._secrets.get(user)
            if secret is not None and hmac.compare_digest(secret, password.encode()):
                return user
            raise BadCredentials("wrong user name or password")
        if self.scheme == "bearer" and kind.lower() == "bearer":
            token = value.strip().encode()
            for user, secret in self._secrets.items():
                if hmac.compare_digest(secret, token):
                    return user
            raise BadCredentials("unknown token")
        raise BadCredentials(f"this endpoint takes {self.scheme} credentials")
