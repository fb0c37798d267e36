"""What the gateway counts and logs: Prometheus series, per-request tallies, the access log, activity."""
