"""The kubetune command-line client of the HTTP API."""
