"""Views of every kind the adapter must name: functions, classes, streaming, failing."""

from __future__ import annotations

import asyncio
import io
import threading

from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views import View
from django.views.decorators.http import require_http_methods


def health(request):
    """Liveness probe.

    Answers 200 while the process serves requests.
    """
    return HttpResponse("ok")


def item(request, item_id: int):
    if item_id == 404:
        raise Http404("no such item")
    return JsonResponse({"id": item_id})


@require_http_methods(["GET", "POST"])
def echo(request):
    """Echo the request body."""
    return HttpResponse(request.body, status=201 if request.method == "POST" else 200)


def upload(request):
    """Accept a body without reading it."""
    return HttpResponse(status=204)


def article(request, year: str, slug: str):
    return HttpResponse(f"{year}/{slug}")


def boom(request):
    raise RuntimeError("kaput")


async def async_boom(request):
    raise RuntimeError("async kaput")


async def async_hello(request, name: str):
    """Greets asynchronously."""
    await asyncio.sleep(0)
    return HttpResponse(f"hello {name}")


def stream(request, chunks: int):
    """Streams ``chunks`` chunks of 10 bytes."""
    return StreamingHttpResponse(b"0123456789" for _ in range(chunks))


def async_stream(request, chunks: int):
    async def body():
        for _ in range(chunks):
            await asyncio.sleep(0)
            yield b"abcde"

    return StreamingHttpResponse(body())


class OrderView(View):
    """Orders of a user."""

    def get(self, request, user_id, order_id):
        """Read one order."""
        return JsonResponse({"user": user_id, "order": order_id})

    def delete(self, request, user_id, order_id):
        return HttpResponse(status=204)


SLOW_VIEW_STARTED = threading.Event()


async def async_slow(request):
    SLOW_VIEW_STARTED.set()
    await asyncio.sleep(5)
    return HttpResponse("too late")


def download(request):
    return FileResponse(io.BytesIO(b"x" * 1234), content_type="application/octet-stream")
