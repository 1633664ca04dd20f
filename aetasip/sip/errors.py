"""
Errors raised by the SIP core for input a peer sent.
"""

from __future__ import annotations


class ParseError(Exception):
    """
    A message, header or URI is malformed.

    @ivar reason: a reason phrase for the 400 response.
    @ivar status: the status code to answer a request with (400 unless the
        RFC asks for another, e.g. 505 for an unsupported SIP version).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
