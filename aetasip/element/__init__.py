"""The SIP element: its core between transports and transaction users (DESIGN.md, "Layout")."""
