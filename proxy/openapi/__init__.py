"""The API reference: an OpenAPI 3.1 document built from the route tables and the request schemas.

    entry.py         what one route's description holds
    table_*.py       the descriptions, one `Route(...)` per route
    v1_schemas.py    the /v1 bodies, as far as the gateway checks them
    schemas.py       schemas/api/*.json (and config schemas) as components
    document.py      the join, and its bytes with an ETag
    routes.py        GET /api/openapi.json and the /dashboard/api page
"""

from .document import ROUTES, build_document
from .routes import setup

__all__ = ["ROUTES", "build_document", "setup"]
