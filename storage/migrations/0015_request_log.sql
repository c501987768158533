-- The request log (opt-in in the client: `request_logging=True`): one row per logged request,
-- masked in the app before it was sent. Kept 15 days by default (`tallyhub serve
-- --request-log-days N` changes it); headers, bodies and stack traces are compressed with ZSTD.
-- Ordered for "this app and env, this time range": newest first is `ORDER BY time DESC`.
--   SELECT time, method, url_path, status, duration_ms, consumer FROM request_log
--   WHERE app = 'shop' AND time > now() - INTERVAL 1 HOUR AND status >= 500 ORDER BY time DESC LIMIT 50
CREATE TABLE IF NOT EXISTS request_log
(
    time                    DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    app                     LowCardinality(String),
    env                     LowCardinality(String),
    service                 LowCardinality(String),
    instance                String,
    request_id              UUID,
    trace_id                String,
    method                  LowCardinality(String),
    scheme                  LowCardinality(String),
    host                    String,
    url_path                String,
    url_query               String,
    route                   String,
    status                  UInt16,
    duration_ms             Float64,
    request_size            UInt64,
    response_size           UInt64,
    consumer                String,
    client_ip               String,
    user_agent              String,
    request_headers         Map(String, String) CODEC(ZSTD(3)),
    response_headers        Map(String, String) CODEC(ZSTD(3)),
    request_body            String CODEC(ZSTD(3)),
    request_body_truncated  Bool,
    response_body           String CODEC(ZSTD(3)),
    response_body_truncated Bool,
    exception_type          String,
    exception_message       String,
    stacktrace              String CODEC(ZSTD(3)),
    log_lines               Array(String) CODEC(ZSTD(3)),
    received_at             DateTime('UTC') CODEC(Delta, ZSTD)
)
ENGINE = MergeTree
PARTITION BY toDate(time)
ORDER BY (app, env, time, request_id)
TTL toDateTime(time) + INTERVAL 15 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;
