"""Signed Record-Route values: proof that a dialog was set up through us.

An in-dialog request is forwarded only for a dialog this node knows, or when
the Route value of ours that it carries bears a token that only a holder of
the key could have written (our Record-Route of the dialog's INVITE), so
that dialogs survive a restart, or reach another node of a cluster sharing
the key, without a database lookup. Without it, anyone could send
``BYE sip:victim`` with a made-up To-tag and ``Route: <sip:us;lr>`` and have
us relay it anywhere (an open relay).

The token is a keyed BLAKE2s MAC over the Call-ID and the caller's tag (the
INVITE's From-tag), which every request of the dialog carries, in From or in
To depending on its direction. It goes into our Record-Route URI as the
``sf`` parameter: ``<sip:192.0.2.1:5060;lr;sf=TOKEN>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Final

__all__ = ["PARAM", "RouteSigner"]

PARAM: Final = b"sf"
_DIGEST = 9  # bytes: 72 bits, 12 characters of base64url


class RouteSigner:
    """Makes and checks the ``sf`` token of our Record-Route values."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        # BLAKE2s takes keys up to 32 bytes: longer configured secrets are hashed down.
        raw = key if key else os.urandom(32)
        self._key = raw if len(raw) <= 32 else hashlib.sha256(raw).digest()

    def token(self, call_id: bytes, caller_tag: bytes) -> bytes:
        mac = hashlib.blake2s(call_id + b"\x00" + caller_tag, digest_size=_DIGEST, key=self._key)
        return base64.urlsafe_b64encode(mac.digest())

    def verify(
        self, token: bytes, call_id: bytes, tag_a: bytes | None, tag_b: bytes | None
    ) -> bool:
        """True when ``token`` was made for this Call-ID and either tag (the
        caller's tag is in From or in To, by the request's direction)."""
        if len(token) != 12:
            return False
        for tag in (tag_a, tag_b):
            if tag is not None and hmac.compare_digest(token, self.token(call_id, tag)):
                return True
        return False
