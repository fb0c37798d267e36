"""`python -m gateway` = the `mtls-gateway` command."""

from gateway.cli import entry

entry()
