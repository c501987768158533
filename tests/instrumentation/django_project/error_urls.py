"""A URLconf for the error tests: the project's routes, plus views that fail validation (DRF
serializers, a Django Ninja body schema) or raise (``ROOT_URLCONF`` is overridden to this one)."""

from __future__ import annotations

from django.urls import path
from ninja import NinjaAPI, Schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from tallyhub import set_consumer

from .urls import urlpatterns as project_urlpatterns


class InventoryMismatch(Exception):
    pass


class AddressSerializer(serializers.Serializer):
    city = serializers.CharField(max_length=20)
    zip = serializers.RegexField(r"^\d{5}$")


class LineSerializer(serializers.Serializer):
    sku = serializers.CharField()
    quantity = serializers.IntegerField(min_value=1)


class OrderSerializer(serializers.Serializer):
    size = serializers.ChoiceField(choices=["S", "M", "L"])
    address = AddressSerializer()
    lines = LineSerializer(many=True)
    tags = serializers.ListField(child=serializers.IntegerField(), required=False)

    def validate(self, data: dict) -> dict:
        if data["size"] == "S" and len(data["lines"]) > 1:
            raise serializers.ValidationError("Small orders have one line.", code="too_many_lines")
        return data


@api_view(["POST"])
def drf_orders(request):
    """Validates an order; the consumer is known before the validation fails."""
    if "X-Consumer" in request.headers:
        set_consumer(request, request.headers["X-Consumer"])
    serializer = OrderSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return Response(serializer.validated_data, status=201)


@api_view(["GET"])
def drf_plain_400(request):
    return Response({"error": "bad-secret"}, status=400)  # no ErrorDetail: not a serializer's errors


@api_view(["GET"])
def drf_crash(request):
    raise InventoryMismatch("3 units missing")  # not an APIException: DRF lets Django handle it


@api_view(["GET"])
def drf_not_found(request):
    raise NotFound("no such order")


api = NinjaAPI(urls_namespace="errorsapi")


class ItemIn(Schema):
    name: str
    price: float


@api.post("/items")
def create_item(request, item: ItemIn):
    return {"name": item.name}


@api.get("/items")
def list_items(request, limit: int = 10):
    return []


urlpatterns = [
    *project_urlpatterns,
    path("errors/drf/orders", drf_orders),
    path("errors/drf/plain", drf_plain_400),
    path("errors/drf/crash", drf_crash),
    path("errors/drf/missing", drf_not_found),
    path("errors/ninja/", api.urls),
]
