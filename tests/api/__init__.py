"""Tests of the HTTP API (kubetune_api)."""
