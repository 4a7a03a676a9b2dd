"""Telemetry: the record schema, metric vocabulary, store, importers and the live recorder."""
