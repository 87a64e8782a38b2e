"""Weightless stand-ins for the model-bound node types (loaded by the test server only)."""
