"""`python -m gateway` = the `mtls-gateway` command."""

from gateway.process.cli import entry

entry()
