"""
aetasip: a hosted SIP service for broadcast audio codecs.
"""

__version__ = "0.1.0"
