"""What every framework adapter shares about route templates."""

UNMATCHED_ROUTE = "(unmatched)"
"""The one route under which requests that match no route are recorded, so that a scanner
probing random paths cannot create unbounded series."""
