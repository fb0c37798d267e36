"""mTLS edge gateway: terminate TLS, verify client certificates, apply route policy, forward."""

__version__ = "0.1.0"
