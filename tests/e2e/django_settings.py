"""Settings of the one-file Django site (tests/e2e/django_site.py)."""

DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.e2e.django_site"
SECRET_KEY = "not-a-secret: test site"
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
INSTALLED_APPS: list[str] = []
