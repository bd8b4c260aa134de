"""Conformance: case catalog, golden corpus, runner, reports, CLI."""
