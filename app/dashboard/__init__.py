"""The operator's page: `/dashboard`, its JSON, its templates and static files.

Reads the table through its own queries (`queries.py`) and acts only through the API's
re-drive endpoint, which the page's JavaScript calls. May import `app.store`, the web
edge's auth, errors and schemas, and the shared modules; never `app.processing`.
Nothing imports it but `create_app`.
"""

from app.dashboard.views import blp

__all__ = ["blp"]
