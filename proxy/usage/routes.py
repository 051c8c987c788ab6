"""The usage routes live in proxy/routes/usage_routes.py; this name is kept for importers."""

from ..routes.usage_routes import setup

__all__ = ["setup"]
