"""
The RTP relay (issue 14): SDP rewriting, the relay decision, and relay
nodes (L{aetasip.interfaces.IRelay}) — the built-in one and rtpengine.
"""
