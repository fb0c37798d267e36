"""The origin side: the HTTP/1.1 client and its sans-IO core, keep-alive pools, targets, health checks."""
