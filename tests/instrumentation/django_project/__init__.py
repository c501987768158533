"""A minimal Django project for the Django adapter's tests: settings, views and one URLconf.

Django is configured once per test process (``configure``, from the test modules' fixtures; the
whole suite shares one process). The URLconf (``urls``) imports DRF and Django Ninja, which read
the settings at import: Django imports it on the first request, after ``configure``.
"""

from __future__ import annotations

URLCONF = f"{__name__}.urls"
MIDDLEWARE = [
    "tallyhub.instrumentation.django.TallyhubMiddleware",
    "django.middleware.common.CommonMiddleware",
]


def configure() -> None:
    """Configure Django for this process, once (the whole suite runs in one pytest process)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tallyhub-tests",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=URLCONF,
            MIDDLEWARE=MIDDLEWARE,
            INSTALLED_APPS=[],
            DATABASES={},
            USE_TZ=True,
            REST_FRAMEWORK={
                "DEFAULT_AUTHENTICATION_CLASSES": [],
                "DEFAULT_PERMISSION_CLASSES": [],
                "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
                "UNAUTHENTICATED_USER": None,
            },
        )
        django.setup()
