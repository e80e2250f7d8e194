"""The ground floor: settings and profiles, the one error tree, URIs, caller credentials (API keys and JWTs), and
OpenTelemetry set-up and trace propagation. Everything else stands on it.

May import: nothing of ragfn.
"""
