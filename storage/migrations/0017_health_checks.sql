-- Uptime health checks: the hub calls each app's configured URL every minute (`alerts/health_checks.py`);
-- one row per check. `ok`: a 2xx answer within the timeout, after at most one retry (`attempts` 1 or 2);
-- `status` 0: no answer (timeout, connection refused, TLS error: `error` says which); `duration_ms`: the
-- last attempt's. Read by `storage/uptime_queries.py` (uptime and incidents over 24 h, 7 d, 30 d).
--   SELECT url, countIf(ok) / count() AS uptime FROM health_checks
--   WHERE app = 'shop' AND time > now() - INTERVAL 1 DAY GROUP BY url
--   SELECT time, url, status, error FROM health_checks WHERE app = 'shop' AND NOT ok ORDER BY time DESC LIMIT 20
CREATE TABLE IF NOT EXISTS health_checks
(
    time         DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    app          LowCardinality(String),
    env          LowCardinality(String),
    url          String,
    ok           Bool,
    status       UInt16,
    duration_ms  Float64,
    attempts     UInt8,
    error        String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (app, env, url, time)
TTL toDateTime(time) + INTERVAL 12 MONTH;
