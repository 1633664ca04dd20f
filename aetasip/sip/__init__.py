"""
The SIP protocol core: sans-IO parsing, building, transactions and digest.
Nothing in this package touches a socket or a reactor.
"""
