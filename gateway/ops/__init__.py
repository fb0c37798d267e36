"""What operators see: the admin port, /status, /certs, the status page, expiry, worker state."""
