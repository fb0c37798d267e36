"""The client side: accept, the TLS handshake, admission, the HTTP/1.1 server and its sans-IO core."""
