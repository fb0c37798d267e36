"""One request's way through: routing, policy, the exchange and its attempts, the pipeline, the snapshot."""
