"""Failures a relay node reports whatever its kind (built-in or rtpengine)."""

from __future__ import annotations


class UnknownSession(LookupError):
    """
    An answer for a call whose offer never reached the node's media
    engine: the other server of a cluster made the offer on its own
    built-in relay (its ports died with it), or no rtpengine of the node
    has the call. The media handler refuses the answer (the call ends
    with a 500 and a Warning, end cause C{media failure}) rather than let
    the call go on silent.
    """
