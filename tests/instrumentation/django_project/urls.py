"""The test project's root URLconf: path() with converters and include() prefixes, re_path(),
a DRF DefaultRouter with a ViewSet, a Django Ninja API."""

from __future__ import annotations

from django.urls import include, path, re_path
from ninja import NinjaAPI, Router
from rest_framework import routers, viewsets
from rest_framework.decorators import action, api_view
from rest_framework.response import Response

from . import views


class ItemViewSet(viewsets.ViewSet):
    """Items, the DRF way."""

    def list(self, request, **kwargs):
        """List the items."""
        return Response([{"id": 1}])

    def create(self, request, **kwargs):
        return Response(request.data, status=201)

    def retrieve(self, request, pk=None, **kwargs):
        """Read one item.

        By primary key.
        """
        return Response({"id": pk})

    def destroy(self, request, pk=None, **kwargs):
        return Response(status=204)

    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None, **kwargs):
        """Archive an item."""
        return Response({"archived": pk})


@api_view(["GET", "POST"])
def drf_ping(request):
    """Ping, the DRF way."""
    return Response({"pong": True})


router = routers.DefaultRouter()
router.register("items", ItemViewSet, basename="item")
path_router = routers.SimpleRouter(use_regex_path=False)  # DRF >= 3.15: path() routes
path_router.register("items", ItemViewSet, basename="path-item")

api = NinjaAPI(title="Test API", version="2.0.0", urls_namespace="testapi")
users = Router()


@api.get("/things/{int:thing_id}", summary="Read a thing")
def read_thing(request, thing_id: int):
    """Looks the thing up.

    In the warehouse.
    """
    return {"id": thing_id}


@api.post("/things")
def create_thing(request):
    return {"created": True}


@api.get("/things/{thing_id}/parts/{part}")
async def thing_part(request, thing_id: int, part: str):
    """Read a part of a thing."""
    return {"id": thing_id, "part": part}


@users.get("/{user_id}")
def read_user(request, user_id: str):
    return {"user": user_id}


api.add_router("/users", users)

urlpatterns = [
    path("health", views.health),
    path("echo/", views.echo),
    path("menü/", views.health),
    path("upload", views.upload),
    path("items/<int:item_id>", views.item),
    path("boom", views.boom),
    path("async/boom", views.async_boom),
    path("async/hello/<str:name>", views.async_hello),
    path("stream/<int:chunks>", views.stream),
    path("async/stream/<int:chunks>", views.async_stream),
    path("async/slow", views.async_slow),
    path("download", views.download),
    path(
        "shop/",
        include(
            [
                path("users/<slug:user_id>/orders/<uuid:order_id>", views.OrderView.as_view()),
                re_path(r"^archive/(?P<year>[0-9]{4})/(?P<slug>[\w-]+)/$", views.article),
            ]
        ),
    ),
    re_path(r"^articles/(?P<year>[0-9]{4})/(?P<slug>[\w-]+)/$", views.article),
    path("drf/", include(router.urls)),
    path("drf/ping", drf_ping),
    path("drf2/", include(path_router.urls)),
    path("ninja/", api.urls),
]
