"""What every framework adapter shares about route templates."""

UNMATCHED_ROUTE = "(unmatched)"
"""The one route under which requests that match no route are recorded, so that a scanner
probing random paths cannot create unbounded series."""

UNKNOWN_ROUTE = "(unknown)"
"""The route of every request of an app whose framework tallyhub does not know (plain ASGI or
WSGI apps): method, status, duration and sizes are exact, the template is not known."""
