"""The process on top: the server, workers, the command line, the demo and its echo upstream."""
