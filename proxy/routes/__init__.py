"""Thin HTTP handlers: OpenAI API, auth, keys, usage, admin."""
