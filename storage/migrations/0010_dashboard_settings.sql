-- The dashboard's settings, per app and per endpoint, and which 4xx answers are expected.
-- Every change inserts the whole row again: FINAL keeps the latest (`changed_at`) per key.

-- Per app: the Apdex threshold in seconds (0.5 for an app without a row).
CREATE TABLE IF NOT EXISTS app_settings
(
    app        LowCardinality(String),
    apdex_t    Float64,
    changed_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(changed_at)
ORDER BY app;

-- Per endpoint: hidden from the dashboard's endpoint list, its own Apdex threshold (NULL: the
-- app's), and the 4xx statuses that are expected answers of it (0: every 4xx). A row here
-- replaces what `expected_client_errors` says about the endpoint.
CREATE TABLE IF NOT EXISTS endpoint_settings
(
    app               LowCardinality(String),
    method            LowCardinality(String),
    route             String,
    hidden            UInt8 DEFAULT 0,
    apdex_t           Nullable(Float64),
    expected_statuses Array(UInt16),
    changed_at        DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(changed_at)
ORDER BY (app, method, route);

-- The one definition of an expected client error, read by the overviews below, `tallyhub report`
-- and the dashboard: per endpoint, its expected 4xx statuses (0: every 4xx), from its
-- `endpoint_settings` row, or every 4xx for an endpoint in `expected_client_errors` (which
-- `INSERT INTO expected_client_errors (app, method, route) VALUES (...)` still marks so).
CREATE VIEW IF NOT EXISTS expected_client_error_codes AS
SELECT app, method, route, expected_statuses AS statuses
FROM endpoint_settings FINAL
UNION ALL
SELECT app, method, route, CAST([0], 'Array(UInt16)') AS statuses
FROM expected_client_errors
WHERE (app, method, route) NOT IN (SELECT app, method, route FROM endpoint_settings);

-- The same, one row per expected status: a client error is a request with a 4xx status whose
-- (app, method, route, status) is not in here.
CREATE VIEW IF NOT EXISTS expected_client_statuses AS
SELECT DISTINCT app, method, route, arrayJoin(if(has(statuses, 0), range(400, 500), statuses)) AS status
FROM expected_client_error_codes;

-- The endpoint overviews of 0008, with client errors by that definition.
CREATE OR REPLACE VIEW endpoint_overview AS
SELECT
    method,
    route,
    n AS requests,
    n / greatest(dateDiff('minute', {from:DateTime}, {to:DateTime}), 1) AS requests_per_minute,
    n_client AS client_errors,
    n_server AS server_errors,
    n_client / n AS client_error_rate,
    n_server / n AS server_error_rate,
    tallyhub_quantile(0.50, buckets, n) AS p50,
    tallyhub_quantile(0.75, buckets, n) AS p75,
    tallyhub_quantile(0.95, buckets, n) AS p95,
    tallyhub_quantile(0.99, buckets, n) AS p99,
    tallyhub_apdex({apdex_t:Float64}, buckets, n) AS apdex,
    duration_total / n AS mean_duration,
    request_bytes / n AS mean_request_size,
    response_bytes / n AS mean_response_size
FROM
(
    SELECT
        method,
        route,
        sum(requests) AS n,
        sumIf(requests, status BETWEEN 400 AND 499
              AND (app, method, route, status) NOT IN (SELECT app, method, route, status FROM expected_client_statuses)) AS n_client,
        sumIf(requests, status >= 500) AS n_server,
        sumMap(duration_buckets) AS buckets,
        sum(duration_sum) AS duration_total,
        sum(request_size_sum) AS request_bytes,
        sum(response_size_sum) AS response_bytes
    FROM requests
    WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
      AND minute >= {from:DateTime} AND minute < {to:DateTime}
    GROUP BY method, route
)
ORDER BY requests DESC;

CREATE OR REPLACE VIEW endpoint_overview_hourly AS
SELECT
    method,
    route,
    n AS requests,
    n / greatest(dateDiff('minute', {from:DateTime}, {to:DateTime}), 1) AS requests_per_minute,
    n_client AS client_errors,
    n_server AS server_errors,
    n_client / n AS client_error_rate,
    n_server / n AS server_error_rate,
    tallyhub_quantile(0.50, buckets, n) AS p50,
    tallyhub_quantile(0.75, buckets, n) AS p75,
    tallyhub_quantile(0.95, buckets, n) AS p95,
    tallyhub_quantile(0.99, buckets, n) AS p99,
    tallyhub_apdex({apdex_t:Float64}, buckets, n) AS apdex,
    duration_total / n AS mean_duration,
    request_bytes / n AS mean_request_size,
    response_bytes / n AS mean_response_size
FROM
(
    SELECT
        method,
        route,
        sum(requests) AS n,
        sumIf(requests, status BETWEEN 400 AND 499
              AND (app, method, route, status) NOT IN (SELECT app, method, route, status FROM expected_client_statuses)) AS n_client,
        sumIf(requests, status >= 500) AS n_server,
        sumMap(duration_buckets) AS buckets,
        sum(duration_sum) AS duration_total,
        sum(request_size_sum) AS request_bytes,
        sum(response_size_sum) AS response_bytes
    FROM requests_hourly
    WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
      AND hour >= {from:DateTime} AND hour < {to:DateTime}
    GROUP BY method, route
)
ORDER BY requests DESC;

CREATE OR REPLACE VIEW endpoint_overview_daily AS
SELECT
    method,
    route,
    n AS requests,
    n / greatest(dateDiff('minute', {from:DateTime}, {to:DateTime}), 1) AS requests_per_minute,
    n_client AS client_errors,
    n_server AS server_errors,
    n_client / n AS client_error_rate,
    n_server / n AS server_error_rate,
    tallyhub_quantile(0.50, buckets, n) AS p50,
    tallyhub_quantile(0.75, buckets, n) AS p75,
    tallyhub_quantile(0.95, buckets, n) AS p95,
    tallyhub_quantile(0.99, buckets, n) AS p99,
    tallyhub_apdex({apdex_t:Float64}, buckets, n) AS apdex,
    duration_total / n AS mean_duration,
    request_bytes / n AS mean_request_size,
    response_bytes / n AS mean_response_size
FROM
(
    SELECT
        method,
        route,
        sum(requests) AS n,
        sumIf(requests, status BETWEEN 400 AND 499
              AND (app, method, route, status) NOT IN (SELECT app, method, route, status FROM expected_client_statuses)) AS n_client,
        sumIf(requests, status >= 500) AS n_server,
        sumMap(duration_buckets) AS buckets,
        sum(duration_sum) AS duration_total,
        sum(request_size_sum) AS request_bytes,
        sum(response_size_sum) AS response_bytes
    FROM requests_daily
    WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
      AND day >= {from:DateTime} AND day < {to:DateTime}
    GROUP BY method, route
)
ORDER BY requests DESC;
