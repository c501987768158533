"""FastAPI: ``app.add_middleware(TallyhubMiddleware, app_key="thk_…")`` — Starlette's middleware, the
routes of FastAPI's router are Starlette's (``tallyhub.instrumentation.starlette``)."""

from tallyhub.instrumentation.starlette import TallyhubMiddleware

__all__ = ["TallyhubMiddleware"]
