"""
The C{aetasip} twistd plugin: C{twistd -n aetasip [--config FILE]}.
"""

from twisted.application.service import ServiceMaker

aetasip = ServiceMaker(
    "aetasip",
    "aetasip.tap",
    "Hosted SIP service for broadcast audio codecs: registrar, proxy, STUN, RTP relay.",
    "aetasip",
)
