"""A one-file Django site for the launcher tests (settings: tests.e2e.django_settings); no
tallyhub code: the launcher adds it."""

import json

from django.core.wsgi import get_wsgi_application
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def read_item(request, item_id: int):
    return JsonResponse({"id": item_id})


@csrf_exempt
def items(request):
    return JsonResponse(json.loads(request.body), status=201)


def boom(request):
    raise RuntimeError("an unhandled error")


urlpatterns = [
    path("items/<int:item_id>", read_item),
    path("items", items),
    path("boom", boom),
]

application = get_wsgi_application()
