"""The OTLP/HTTP receiver over real loopback connections: protobuf, JSON, gzip, errors, clients,
hostile clients."""

from __future__ import annotations

import base64
import copy
import gzip
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from urllib.parse import urlsplit

import httpx
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.convert.events import has_stored_event
from tallyhub.collector_processor.convert.requests import rejected_points, request_rows
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive import http_receiver
from tallyhub.collector_processor.receive.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.receive.http_receiver import MAX_GZIP_MEMBERS, ByteBudget, OtlpHttpServer
from tallyhub.collector_processor.receive.receiver import KIND_LOGS, KIND_METRICS, MAX_MESSAGE_BYTES, Receiver
from tallyhub.instrumentation.aggregator import RequestAggregator
from tests.collector_processor import startup_events

KEY = generate_key()
PROTOBUF = {"content-type": "application/x-protobuf", "x-tallyhub-app-key": KEY}
JSON = {"content-type": "application/json", "x-tallyhub-app-key": KEY}


class Hub:
    def __init__(self, server: OtlpHttpServer, queue: DurableQueue, receiver: Receiver) -> None:
        self.server = server
        self.queue = queue
        self.receiver = receiver
        self.url = server.url
        self.client = httpx.Client(base_url=server.url, timeout=10)

    def post(self, path: str, content: bytes | str, headers: dict[str, str]) -> httpx.Response:
        return self.client.post(path, content=content, headers=headers)

    def records(self) -> list:
        return self.queue.next_batch(100, 1 << 30, wait_s=0)


@contextmanager
def running_hub(tmp_path, budget: ByteBudget | None = None, readiness: Callable[[], list[str]] = list) -> Iterator[Hub]:
    queue = DurableQueue(tmp_path / "queue")
    receiver = Receiver(KeyRing(lambda: {hash_key(KEY): "shop"}), queue)
    server = OtlpHttpServer(receiver, "127.0.0.1:0", budget, readiness)
    server.start()
    hub = Hub(server, queue, receiver)
    yield hub
    hub.client.close()
    server.stop(grace_s=1)
    queue.close()


@pytest.fixture
def hub(tmp_path) -> Iterator[Hub]:
    with running_hub(tmp_path) as hub:
        yield hub


def sample_request() -> ExportMetricsServiceRequest:
    point = pb.ExponentialHistogramDataPoint(
        time_unix_nano=1_790_000_000 * 10**9, count=1, sum=0.1, scale=3, positive={"offset": -27, "bucket_counts": [1]}
    )
    metric = pb.Metric(
        name="http.server.request.duration",
        exponential_histogram={
            "data_points": [point],
            "aggregation_temporality": pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
        },
    )
    return ExportMetricsServiceRequest(resource_metrics=[{"scope_metrics": [{"metrics": [metric]}]}])


def status_of(response: httpx.Response) -> Status:
    """The ``google.rpc.Status`` of an error answer, in the content type it came in."""
    if response.headers["content-type"] == "application/json":
        return json_format.Parse(response.content, Status())
    assert response.headers["content-type"] == "application/x-protobuf"
    return Status.FromString(response.content)


# -- OTLP/JSON, written the way the specification's examples are ------------------------------

TRACE_ID = "5B8EFFF798038103D269B633813FC60C"
SPAN_ID = "EEE19B7EC3C1B174"


def json_export() -> dict:
    """Two GET /items/{id} 200 requests in one delta exponential histogram, as a JSON client
    writes them: camelCase, int64 as strings (and numbers), enums as integers, hex ids, and
    fields this hub has never heard of."""
    return {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "shop"}},
                        {"key": "deployment.environment.name", "value": {"stringValue": "prod"}},
                    ]
                },
                "scopeMetrics": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "metrics": [
                            {
                                "name": "http.server.request.duration",
                                "unit": "s",
                                "exponentialHistogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "attributes": [
                                                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                                                {"key": "http.route", "value": {"stringValue": "/items/{id}"}},
                                                {"key": "http.response.status_code", "value": {"intValue": "200"}},
                                            ],
                                            "startTimeUnixNano": "1764000000000000000",
                                            "timeUnixNano": "1764000060000000000",
                                            "count": "2",
                                            "sum": 0.3,
                                            "scale": 3,
                                            "zeroCount": 0,
                                            "positive": {"offset": -27, "bucketCounts": ["1", 1]},
                                            "min": 0.1,
                                            "max": 0.2,
                                            "exemplars": [
                                                {
                                                    "timeUnixNano": "1764000001000000000",
                                                    "asDouble": 0.1,
                                                    "traceId": TRACE_ID,
                                                    "spanId": SPAN_ID,
                                                }
                                            ],
                                            "aFieldFromTheFuture": {"nested": [1, 2, 3]},
                                        }
                                    ],
                                },
                            }
                        ],
                        "schemaUrlOfTomorrow": "https://example.com",
                    }
                ],
            }
        ]
    }


def test_protobuf_is_queued_verbatim_and_answered_in_protobuf(hub) -> None:
    request = sample_request()
    response = hub.post("/v1/metrics", request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert ExportMetricsServiceResponse.FromString(response.content) == ExportMetricsServiceResponse()
    (record,) = hub.records()
    assert (record.kind, record.app, record.payload) == (KIND_METRICS, "shop", request.SerializeToString())


def test_bearer_authorization_is_accepted(hub) -> None:
    headers = {"content-type": "application/x-protobuf", "authorization": f"Bearer {KEY}"}
    assert hub.post("/v1/metrics", sample_request().SerializeToString(), headers).status_code == 200
    assert hub.queue.depth() == 1


def test_json_is_queued_as_protobuf_and_answered_in_json(hub) -> None:
    response = hub.post("/v1/metrics", json.dumps(json_export()), JSON)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    (record,) = hub.records()
    assert (record.kind, record.app) == (KIND_METRICS, "shop")
    request = ExportMetricsServiceRequest.FromString(record.payload)
    (row,) = request_rows(request, "shop")
    assert (row.env, row.service, row.method, row.route, row.status, row.requests) == (
        "prod",
        "shop",
        "GET",
        "/items/{id}",
        200,
        2,
    )
    point = request.resource_metrics[0].scope_metrics[0].metrics[0].exponential_histogram.data_points[0]
    assert (point.time_unix_nano, list(point.positive.bucket_counts)) == (1_764_000_060_000_000_000, [1, 1])
    assert point.exemplars[0].trace_id == bytes.fromhex(TRACE_ID)
    assert point.exemplars[0].span_id == bytes.fromhex(SPAN_ID)


def test_json_content_type_parameters_are_understood(hub) -> None:
    headers = {**JSON, "content-type": "application/json; charset=utf-8"}
    assert hub.post("/v1/metrics", json.dumps(json_export()), headers).status_code == 200
    assert hub.queue.depth() == 1


@pytest.mark.parametrize("headers", [PROTOBUF, JSON], ids=["protobuf", "json"])
def test_gzip_bodies_are_inflated(hub, headers) -> None:
    is_json = headers is JSON
    body = json.dumps(json_export()).encode() if is_json else sample_request().SerializeToString()
    response = hub.post("/v1/metrics", gzip.compress(body), {**headers, "content-encoding": "gzip"})
    assert response.status_code == 200, response.content
    (record,) = hub.records()
    if not is_json:
        assert record.payload == body


def test_a_chunked_body_is_read(hub) -> None:
    data = sample_request().SerializeToString()
    response = hub.client.post("/v1/metrics", content=iter([data[:10], data[10:]]), headers=PROTOBUF)
    assert response.status_code == 200
    (record,) = hub.records()
    assert record.payload == data


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [PROTOBUF, JSON], ids=["protobuf", "json"])
@pytest.mark.parametrize("key", [None, "thk_wrong"], ids=["missing", "wrong"])
def test_missing_or_wrong_key_is_401_with_the_reason(hub, headers, key) -> None:
    headers = {k: v for k, v in headers.items() if k != "x-tallyhub-app-key"}
    if key:
        headers["x-tallyhub-app-key"] = key
    body = json.dumps(json_export()) if headers["content-type"] == JSON["content-type"] else b"\x0a\x00"
    response = hub.post("/v1/metrics", body, headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == headers["content-type"]
    status = status_of(response)
    assert "tallyhub apps create" in status.message and "x-tallyhub-app-key" in status.message
    assert status.code == 16  # UNAUTHENTICATED
    assert hub.queue.depth() == 0
    # the connection stays usable: the refused body was read and dropped
    assert hub.post("/v1/metrics", sample_request().SerializeToString(), PROTOBUF).status_code == 200


def test_a_second_different_key_is_401_and_stores_nothing(hub) -> None:
    headers = {**PROTOBUF, "authorization": "Bearer thk_another"}
    response = hub.post("/v1/metrics", sample_request().SerializeToString(), headers)
    assert response.status_code == 401
    assert "two different app keys" in status_of(response).message
    assert hub.queue.depth() == 0


@pytest.mark.parametrize(
    "body, headers, message",
    [
        (b"\xff\xff\xff", PROTOBUF, "malformed ExportMetricsServiceRequest"),
        (sample_request().SerializeToString()[:-3], PROTOBUF, "malformed ExportMetricsServiceRequest"),
        (b"{", JSON, "malformed ExportMetricsServiceRequest (OTLP/JSON)"),
        (b"[1, 2]", JSON, "must be a JSON object"),
        (b'{"resourceMetrics": "many"}', JSON, "malformed ExportMetricsServiceRequest (OTLP/JSON)"),
        (
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": [{"asInt": "x"}]}}]}]}]}',
            JSON,
            "asInt",
        ),
        (b"\xff\xfe", JSON, "malformed ExportMetricsServiceRequest (OTLP/JSON)"),
        (b"[" * 100_000 + b"]" * 100_000, JSON, "malformed ExportMetricsServiceRequest (OTLP/JSON)"),
    ],
    ids=["garbage", "cut", "json-cut", "json-array", "json-type", "json-int64", "not-utf8", "json-deep"],
)
def test_malformed_bodies_are_400_and_store_nothing(hub, body, headers, message) -> None:
    response = hub.post("/v1/metrics", body, headers)
    assert response.status_code == 400
    status = status_of(response)
    assert message in status.message
    assert status.code == 3  # INVALID_ARGUMENT
    assert hub.queue.depth() == 0
    assert hub.post("/v1/metrics", sample_request().SerializeToString(), PROTOBUF).status_code == 200


def test_a_trace_id_that_is_not_hex_is_400(hub) -> None:
    export = json_export()
    exemplar = export["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["exponentialHistogram"]["dataPoints"][0]
    exemplar["exemplars"][0]["traceId"] = base64.b64encode(bytes.fromhex(TRACE_ID)).decode()  # base64: wrong here
    response = hub.post("/v1/metrics", json.dumps(export), JSON)
    assert response.status_code == 400
    assert "traceId must be hex" in status_of(response).message


def test_malformed_gzip_is_400(hub) -> None:
    cut = gzip.compress(sample_request().SerializeToString())[:-8]
    response = hub.post("/v1/metrics", cut, {**PROTOBUF, "content-encoding": "gzip"})
    assert response.status_code == 400
    assert "malformed gzip body" in status_of(response).message
    assert hub.post("/v1/metrics", b"not gzip", {**PROTOBUF, "content-encoding": "gzip"}).status_code == 400
    assert hub.queue.depth() == 0


def oversized_request() -> bytes:
    request = sample_request()
    request.resource_metrics[0].resource.attributes.add(key="huge", value={"string_value": "x" * MAX_MESSAGE_BYTES})
    return request.SerializeToString()


def test_an_oversized_body_is_413(hub) -> None:
    response = hub.post("/v1/metrics", oversized_request(), PROTOBUF)
    assert response.status_code == 413
    assert "over 16 MiB" in status_of(response).message
    assert hub.queue.depth() == 0


def test_an_oversized_body_is_refused_on_its_headers_alone(hub) -> None:
    """A Content-Length over the limit is answered at once: the body is never waited for. A client
    that waits for "100 Continue" sends no body: its connection is closed; another's body is read
    and dropped as it comes (closing under a client still sending could reset the connection
    before it reads the answer)."""
    url = urlsplit(hub.url)
    for extra, closed in (({}, False), ({"Expect": "100-continue"}, True)):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
        connection.putrequest("POST", "/v1/metrics")
        for name, value in {**PROTOBUF, "Content-Length": str(MAX_MESSAGE_BYTES + 1), **extra}.items():
            connection.putheader(name, value)
        connection.endheaders()  # and no body
        response = connection.getresponse()
        assert response.status == 413
        assert (response.getheader("connection") == "close") is closed
        assert "over 16 MiB" in Status.FromString(response.read()).message
        connection.close()


def test_a_gzip_bomb_is_413_without_inflating_it_all(hub) -> None:
    bomb = gzip.compress(b"\0" * (MAX_MESSAGE_BYTES * 4))
    assert len(bomb) < 100_000
    response = hub.post("/v1/metrics", bomb, {**PROTOBUF, "content-encoding": "gzip"})
    assert response.status_code == 413
    assert "the inflated body is over 16 MiB" in status_of(response).message
    assert hub.queue.depth() == 0


def test_an_oversized_chunked_body_is_413(hub) -> None:
    data = oversized_request()
    chunks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
    response = hub.client.post("/v1/metrics", content=chunks, headers=PROTOBUF)
    assert response.status_code == 413
    assert hub.queue.depth() == 0


def test_unknown_paths_are_404(hub) -> None:
    for path in ("/v1/traces", "/", "/v1/metrics/extra"):
        response = hub.post(path, sample_request().SerializeToString(), PROTOBUF)
        assert response.status_code == 404
        assert "/v1/metrics" in status_of(response).message
    assert hub.client.get("/v1/traces").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD"])
def test_other_methods_are_405(hub, method) -> None:
    response = hub.client.request(method, "/v1/metrics")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, OPTIONS"
    if method != "HEAD":
        assert "POST" in status_of(response).message


@pytest.mark.parametrize(
    "headers, message",
    [
        ({"content-type": "text/plain"}, "unsupported Content-Type 'text/plain'"),
        ({"content-type": ""}, "unsupported Content-Type '(none)'"),
        ({"content-encoding": "br"}, "unsupported Content-Encoding 'br'"),
    ],
)
def test_unsupported_content_types_and_encodings_are_415(hub, headers, message) -> None:
    response = hub.post("/v1/metrics", sample_request().SerializeToString(), {**PROTOBUF, **headers})
    assert response.status_code == 415
    assert message in status_of(response).message
    assert hub.queue.depth() == 0


def test_a_full_disk_is_503_with_retry_after(hub, monkeypatch) -> None:
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub.queue, "append", no_space)
    for headers in (PROTOBUF, JSON):
        body = json.dumps(json_export()) if headers is JSON else sample_request().SerializeToString()
        response = hub.post("/v1/metrics", body, headers)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        status = status_of(response)
        assert "retry later" in status.message
        assert status.code == 14  # UNAVAILABLE


# -- dedup, partial success, logs -------------------------------------------------------------


def test_a_batch_sent_three_times_is_queued_once(hub) -> None:
    headers = {**PROTOBUF, "x-tallyhub-batch-id": "0f3a"}
    for _ in range(3):  # the client never got the acknowledgement, and sends it again
        response = hub.post("/v1/metrics", sample_request().SerializeToString(), headers)
        assert response.status_code == 200
        assert ExportMetricsServiceResponse.FromString(response.content) == ExportMetricsServiceResponse()
    (record,) = hub.records()
    assert record.batch_id == "0f3a"


def test_a_malformed_batch_id_is_400(hub) -> None:
    response = hub.post("/v1/metrics", sample_request().SerializeToString(), {**PROTOBUF, "x-tallyhub-batch-id": "a/b"})
    assert response.status_code == 400
    assert "x-tallyhub-batch-id" in status_of(response).message


def with_a_point_it_refuses(request: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest:
    """Plus a gauge point with more attributes than the hub stores."""
    attributes = [{"key": f"k{i}", "value": {"int_value": i}} for i in range(200)]
    request.resource_metrics[0].scope_metrics[0].metrics.append(
        pb.Metric(
            name="jvm.threads",
            gauge={"data_points": [{"as_int": 3, "time_unix_nano": 1_790_000_000 * 10**9, "attributes": attributes}]},
        )
    )
    return request


def test_points_it_does_not_store_get_partial_success(hub) -> None:
    request = with_a_point_it_refuses(sample_request())
    expected = rejected_points(request)
    assert expected[0] == 1
    response = hub.post("/v1/metrics", request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200
    partial = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert (partial.rejected_data_points, partial.error_message) == expected
    assert hub.queue.depth() == 1  # the rest of it is kept


def test_partial_success_in_json(hub) -> None:
    export = json_export()
    attributes = [{"key": f"k{i}", "value": {"intValue": str(i)}} for i in range(200)]
    export["resourceMetrics"][0]["scopeMetrics"][0]["metrics"].append(
        {
            "name": "jvm.threads",
            "gauge": {"dataPoints": [{"asInt": "3", "timeUnixNano": "1764000000000000000", "attributes": attributes}]},
        }
    )
    response = hub.post("/v1/metrics", json.dumps(export), JSON)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    (record,) = hub.records()
    rejected, message = rejected_points(ExportMetricsServiceRequest.FromString(record.payload))
    assert partial["rejectedDataPoints"] == str(rejected) == "1"  # int64: a string in the protobuf JSON mapping
    assert partial["errorMessage"] == message


def test_a_startup_event_is_queued_with_the_logs_kind(hub) -> None:
    request = startup_events.export(startup_events.log_record())
    response = hub.post("/v1/logs", request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200
    assert ExportLogsServiceResponse.FromString(response.content) == ExportLogsServiceResponse()
    (record,) = hub.records()
    assert (record.kind, record.app, record.payload) == (KIND_LOGS, "shop", request.SerializeToString())


def test_a_startup_event_in_json(hub) -> None:
    record = {
        "timeUnixNano": str(startup_events.T0_NS),
        "observedTimeUnixNano": str(startup_events.T0_NS),
        "severityNumber": 9,
        "eventName": "tallyhub.startup",
        "body": {"stringValue": startup_events.body()},
        "attributes": [{"key": "event.name", "value": {"stringValue": "tallyhub.startup"}}],
        "traceId": TRACE_ID.lower(),
        "spanId": SPAN_ID.lower(),
        "flagsFromTheFuture": 7,
    }
    plain = {**copy.deepcopy(record), "eventName": "", "attributes": [], "body": {"stringValue": "GET / 200"}}
    export = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
                "scopeLogs": [{"scope": {"name": "tallyhub"}, "logRecords": [record, plain]}],
            }
        ]
    }
    response = hub.post("/v1/logs", json.dumps(export), JSON)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "1"
    assert "only tallyhub.startup and tallyhub.request events" in partial["errorMessage"]
    (queued,) = hub.records()
    assert queued.kind == KIND_LOGS
    request = ExportLogsServiceRequest.FromString(queued.payload)
    assert has_stored_event(request)
    log_record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert (log_record.trace_id, log_record.span_id) == (bytes.fromhex(TRACE_ID), bytes.fromhex(SPAN_ID))
    assert log_record.body.string_value == startup_events.body()


# -- foreign clients ---------------------------------------------------------------------------

REQUESTS = {("GET", "/a", 200): 3, ("GET", "/a", 500): 1, ("POST", "/b", 201): 2}


def metrics_data() -> MetricsData:
    """A real client export (tallyhub's own aggregator, as the SDK's ``MetricsData``)."""
    agg = RequestAggregator(Resource.create({"service.instance.id": "i-1"}), InstrumentationScope("tallyhub"))
    for (method, route, status), n in REQUESTS.items():
        for i in range(n):
            agg.record(method, route, status, 0.01 * (i + 1), 0, 100, wall_time_s=1_764_000_000 + i)
    data = agg.collect()
    assert data is not None
    return data


def counts(payload: bytes) -> Counter:
    rows = request_rows(ExportMetricsServiceRequest.FromString(payload), "shop")
    total: Counter = Counter()
    for row in rows:
        total[row.method, row.route, row.status] += row.requests
    return total


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_opentelemetrys_own_http_exporter(hub, compression) -> None:
    exporter = OTLPMetricExporter(
        endpoint=f"{hub.url}/v1/metrics", headers={"x-tallyhub-app-key": KEY}, compression=compression, timeout=10
    )
    try:
        assert exporter.export(metrics_data()) == MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()
    (record,) = hub.records()
    assert record.app == "shop"
    assert counts(record.payload) == Counter(REQUESTS)


def otlp_json(message) -> str:
    """A message as an OTLP/JSON client writes it: integer enums and hex ids."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)

    def hex_ids(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("traceId", "spanId"):
                    value[key] = base64.b64decode(item).hex()
                else:
                    hex_ids(item)
        elif isinstance(value, list):
            for item in value:
                hex_ids(item)

    hex_ids(document)
    return json.dumps(document)


def test_the_same_export_as_raw_json(hub) -> None:
    body = otlp_json(encode_metrics(metrics_data()))
    assert '"aggregationTemporality": 1' in body
    response = hub.post("/v1/metrics", body, JSON)
    assert response.status_code == 200
    assert response.json() == {}
    (record,) = hub.records()
    assert counts(record.payload) == Counter(REQUESTS)


def test_the_export_from_a_foreign_client_with_an_unknown_key_is_refused(hub) -> None:
    exporter = OTLPMetricExporter(endpoint=f"{hub.url}/v1/metrics", headers={"x-tallyhub-app-key": "thk_no"})
    try:
        assert exporter.export(metrics_data()) == MetricExportResult.FAILURE  # 401: not retried
    finally:
        exporter.shutdown()
    assert hub.queue.depth() == 0


# -- health checks -----------------------------------------------------------------------------


def test_healthz_and_readyz_answer_without_a_key(tmp_path) -> None:
    problems: list[str] = []
    with running_hub(tmp_path, readiness=lambda: list(problems)) as hub:
        for path in ("/healthz", "/readyz"):
            response = hub.client.get(path)
            assert (response.status_code, response.json()) == (200, {"status": "ok", "problems": []})
        problems.append("ClickHouse does not answer: ConnectionRefusedError")
        response = hub.client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["problems"] == ["ClickHouse does not answer: ConnectionRefusedError"]
        assert hub.client.get("/healthz").status_code == 200  # alive all the same: no restart would help
        problems.clear()
        hub.server.app.begin_stop()
        assert hub.client.get("/readyz").json() == {"status": "unavailable", "problems": ["the hub is shutting down"]}
        assert hub.client.post("/healthz", content=b"").status_code == 404  # health is GET; POST is for exports


# -- browsers, shutdown ------------------------------------------------------------------------


def test_cors_preflight_lets_browsers_send(hub) -> None:
    preflight = hub.client.options(
        "/v1/metrics",
        headers={
            "origin": "https://shop.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-tallyhub-app-key",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "content-type,x-tallyhub-app-key"
    response = hub.post("/v1/metrics", json.dumps(json_export()), {**JSON, "origin": "https://shop.example"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


def test_stop_answers_the_exports_in_flight_and_refuses_new_ones_with_503(hub) -> None:
    body = sample_request().SerializeToString()
    kept_alive = httpx.Client(base_url=hub.url, timeout=10)
    assert kept_alive.post("/v1/metrics", content=body, headers=PROTOBUF).status_code == 200
    in_flight = open_request(hub, {**PROTOBUF, "Content-Length": str(len(body))}, body[:-1])
    wait_until(lambda: hub.server.budget.in_use == len(body))
    stopping = threading.Thread(target=hub.server.stop, kwargs={"grace_s": 10})
    stopping.start()
    wait_until(lambda: hub.server.app._stopping)
    response = kept_alive.post("/v1/metrics", content=body, headers=PROTOBUF)  # the same connection
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert stopping.is_alive()  # waiting for the export in flight
    in_flight.sendall(body[-1:])
    assert answer(in_flight)[0].status == 200
    stopping.join(10)
    assert not stopping.is_alive()
    assert hub.queue.depth() == 2  # the first export and the one in flight: none lost, none half-taken
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{hub.url}/v1/metrics", content=b"", headers=PROTOBUF)
    kept_alive.close()


def open_request(hub: Hub, headers: dict[str, str], sent: bytes, timeout_s: float = 5) -> socket.socket:
    """A connection that sends a POST /v1/metrics with ``headers`` and then ``sent``, and stays open."""
    url = urlsplit(hub.url)
    connection = socket.create_connection((url.hostname, url.port), timeout=timeout_s)
    head = "POST /v1/metrics HTTP/1.1\r\nHost: hub\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    connection.sendall(head.encode() + b"\r\n" + sent)
    return connection


def answer(connection: socket.socket) -> tuple[http.client.HTTPResponse, bytes]:
    """The answer to the request sent on ``connection``, and its body."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response, response.read()


def partial_request(hub: Hub) -> socket.socket:
    """A connection that sends its headers and 10 of the 1000 bytes it announces."""
    return open_request(hub, {**PROTOBUF, "Content-Length": "1000"}, b"0123456789")


def test_a_client_that_goes_away_mid_body_changes_nothing(hub, capfd) -> None:
    partial_request(hub).close()
    time.sleep(0.3)
    assert hub.post("/v1/metrics", sample_request().SerializeToString(), PROTOBUF).status_code == 200
    assert hub.queue.depth() == 1
    assert "Traceback" not in capfd.readouterr().err


def test_a_stalled_client_is_dropped_after_the_read_timeout(hub, monkeypatch, capfd) -> None:
    monkeypatch.setattr(http_receiver, "READ_TIMEOUT_S", 0.3)
    connection = partial_request(hub)
    started = time.monotonic()
    assert connection.recv(1000) == b""  # closed by the hub, without an answer
    assert time.monotonic() - started < 3
    connection.close()
    assert hub.queue.depth() == 0
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "sent", [b"", b"POST /v1/metrics HTTP/1.1\r\nHost: hub\r\nContent-"], ids=["nothing", "half-headers"]
)
def test_a_connection_that_sends_no_whole_request_is_closed_after_the_read_timeout(hub, monkeypatch, sent) -> None:
    monkeypatch.setattr(http_receiver, "READ_TIMEOUT_S", 0.3)
    url = urlsplit(hub.url)
    connection = socket.create_connection((url.hostname, url.port), timeout=5)
    connection.sendall(sent)
    started = time.monotonic()
    assert connection.recv(1000) == b""  # closed by the hub
    assert time.monotonic() - started < 3
    connection.close()


# -- hostile clients ---------------------------------------------------------------------------


def export_of(size: int) -> bytes:
    """A valid export of a little more than ``size`` bytes."""
    request = sample_request()
    request.resource_metrics[0].resource.attributes.add(key="pad", value={"string_value": "x" * size})
    return request.SerializeToString()


def wait_until(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "size",
    [b"-1", b"+1", b"0x10", b" 1", b"1_0", b"1" * 2000],
    ids=["minus-one", "plus", "0x", "space", "underscore", "too-long"],
)
def test_a_malformed_chunk_size_is_400_without_waiting_for_the_end(hub, size) -> None:
    """Only hex digits frame a chunk: ``-1`` once read the connection to its end (a 1 GiB body
    took 2.3 GiB), ``+1`` or ``0x10`` waited for bytes the client never meant to send."""
    connection = open_request(hub, {**PROTOBUF, "Transfer-Encoding": "chunked"}, size + b"\r\n", timeout_s=2)
    response, body = answer(connection)  # while the client keeps its connection open
    assert response.status == 400
    assert response.getheader("connection") == "close"
    status = Status.FromString(body)
    assert status.code == 3  # INVALID_ARGUMENT
    assert "malformed HTTP request" in status.message
    connection.close()
    assert hub.post("/v1/metrics", sample_request().SerializeToString(), PROTOBUF).status_code == 200
    assert hub.queue.depth() == 1


def test_chunk_extensions_and_trailers_are_understood(hub) -> None:
    data = sample_request().SerializeToString()
    body = b"%x;name=value\r\n%s\r\n%X\r\n%s\r\n0\r\nx-checksum: 1\r\n\r\n" % (10, data[:10], len(data) - 10, data[10:])
    connection = open_request(hub, {**PROTOBUF, "Transfer-Encoding": "chunked"}, body)
    response, _ = answer(connection)
    assert response.status == 200
    assert response.getheader("connection") is None  # kept alive
    connection.close()
    (record,) = hub.records()
    assert record.payload == data


@pytest.mark.timeout(60)
def test_a_gzip_body_of_many_members_is_400_at_once(hub) -> None:
    """100,000 empty members (2 MB) once took minutes: each member copied the rest of the body."""
    response = hub.post("/v1/metrics", gzip.compress(b"") * 100_000, {**PROTOBUF, "content-encoding": "gzip"})
    assert response.status_code == 400
    status = status_of(response)
    assert status.code == 3  # INVALID_ARGUMENT
    assert f"more than {MAX_GZIP_MEMBERS} members" in status.message
    assert hub.queue.depth() == 0
    assert hub.post("/v1/metrics", sample_request().SerializeToString(), PROTOBUF).status_code == 200


@pytest.mark.parametrize("members", [2, MAX_GZIP_MEMBERS, MAX_GZIP_MEMBERS + 1])
def test_gzip_bodies_of_up_to_64_members_are_inflated(hub, members) -> None:
    data = sample_request().SerializeToString()
    cuts = [len(data) * i // members for i in range(members + 1)]
    body = b"".join(gzip.compress(data[start:end]) for start, end in pairwise(cuts))
    response = hub.post("/v1/metrics", body, {**PROTOBUF, "content-encoding": "gzip"})
    if members > MAX_GZIP_MEMBERS:
        assert response.status_code == 400
        assert "send one gzip stream" in status_of(response).message
        assert hub.queue.depth() == 0
    else:
        assert response.status_code == 200
        (record,) = hub.records()
        assert record.payload == data


def hold_budget(hub: Hub, body: bytes) -> socket.socket:
    """A client that announces ``body`` and sends all of it but its last byte: the hub holds its
    share of the budget until the client sends that byte."""
    connection = open_request(hub, {**PROTOBUF, "Content-Length": str(len(body))}, body[:-1])
    wait_until(lambda: hub.server.budget.in_use == len(body))
    return connection


def test_bodies_beyond_the_byte_budget_are_503_with_retry_after(tmp_path) -> None:
    body = export_of(6_000)
    with running_hub(tmp_path, ByteBudget(10_000, wait_s=0.2)) as hub:
        holder = hold_budget(hub, body)
        for headers, content in [
            (PROTOBUF, body),  # its Content-Length does not fit
            ({**PROTOBUF, "content-encoding": "gzip"}, gzip.compress(body)),  # as sent it fits, inflated not
            (PROTOBUF, iter([body])),  # chunked: its chunk does not fit
        ]:
            response = hub.client.post("/v1/metrics", content=content, headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            status = status_of(response)
            assert status.code == 14  # UNAVAILABLE: OTLP clients retry
            assert "receiving too much data at once; retry later" in status.message
        assert hub.receiver.stats.counts()["OTLP/HTTP exports refused: too many bytes in flight"] == 3
        assert hub.server.budget.in_use == len(body)  # the refused gave back what they took

        holder.sendall(body[-1:])
        response, _ = answer(holder)
        assert response.status == 200
        holder.close()
        assert hub.server.budget.in_use == 0
        assert hub.post("/v1/metrics", body, PROTOBUF).status_code == 200  # the retry
        assert hub.server.budget.in_use == 0
        assert hub.queue.depth() == 2


def test_a_body_waits_for_the_budget_while_another_is_read(tmp_path) -> None:
    body = export_of(6_000)
    with running_hub(tmp_path, ByteBudget(10_000, wait_s=30)) as hub:
        holder = hold_budget(hub, body)
        answers: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: answers.append(hub.post("/v1/metrics", body, PROTOBUF)))
        waiter.start()
        time.sleep(0.3)
        assert not answers  # it waits for the holder's share
        holder.sendall(body[-1:])
        assert answer(holder)[0].status == 200
        holder.close()
        waiter.join(10)
        assert [response.status_code for response in answers] == [200]
        assert hub.server.budget.in_use == 0
        assert hub.queue.depth() == 2
        assert "OTLP/HTTP exports refused: too many bytes in flight" not in hub.receiver.stats.counts()


def test_a_body_larger_than_the_whole_budget_is_taken_alone(tmp_path) -> None:
    """Else a small budget would refuse it for ever, however often the client retried."""
    body = export_of(6_000)
    with running_hub(tmp_path, ByteBudget(1_000, wait_s=0.2)) as hub:
        for headers, content in [
            (PROTOBUF, body),
            ({**PROTOBUF, "content-encoding": "gzip"}, gzip.compress(body)),
            (PROTOBUF, iter([body[:3_000], body[3_000:]])),
        ]:
            assert hub.client.post("/v1/metrics", content=content, headers=headers).status_code == 200
        assert hub.server.budget.in_use == 0
        assert hub.queue.depth() == 3


@pytest.mark.timeout(120)
def test_a_burst_of_300_connections_is_answered(hub) -> None:
    """socketserver's default listen backlog (5) left a third of such a burst unanswered."""
    clients = 300
    ready = threading.Barrier(clients)
    outcomes: list[int | str] = []

    def client() -> None:
        ready.wait()
        try:
            connection = open_request(hub, {**PROTOBUF, "Content-Length": "0", "Connection": "close"}, b"", 20)
            with connection:
                outcomes.append(answer(connection)[0].status)  # an empty export: 200, nothing queued
        except OSError as exc:
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(outcomes) == {200: clients}
