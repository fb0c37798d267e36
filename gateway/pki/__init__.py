"""Certificates: identity, chain verification, the strict profile, CRL, OCSP, TLS contexts, the dev PKI."""
