-- Parameterized views (instance uptime is the `instance_uptime` view of 0002): the answers users want first, at the minute level (`requests`), the hour
-- (`requests_hourly`) and the day (`requests_daily`): pick the coarsest level whose granularity
-- fits the window. Parameters: app, env ('' for every env), from and to (a [from, to) window, UTC),
-- and for the overview the Apdex threshold in seconds (0.5 is the usual default).
--   SELECT * FROM endpoint_overview_hourly(app='my-api', env='', from='2026-11-01 00:00:00',
--                                          to='2026-11-26 00:00:00', apdex_t=0.5)
-- Durations are in seconds, sizes in bytes; error rates are fractions of the endpoint's requests,
-- client errors not counting the endpoints in `expected_client_errors`.
CREATE VIEW IF NOT EXISTS endpoint_overview AS
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
              AND (app, method, route) NOT IN (SELECT app, method, route FROM expected_client_errors)) AS n_client,
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

CREATE VIEW IF NOT EXISTS endpoint_overview_hourly AS
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
              AND (app, method, route) NOT IN (SELECT app, method, route FROM expected_client_errors)) AS n_client,
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

CREATE VIEW IF NOT EXISTS endpoint_overview_daily AS
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
              AND (app, method, route) NOT IN (SELECT app, method, route FROM expected_client_errors)) AS n_client,
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

-- Requests, server errors and p95 per minute / hour / day, for a trend.
CREATE VIEW IF NOT EXISTS traffic AS
SELECT time, n AS requests, n_server AS server_errors, tallyhub_quantile(0.95, buckets, n) AS p95
FROM
(
    SELECT minute AS time, sum(requests) AS n, sumIf(requests, status >= 500) AS n_server, sumMap(duration_buckets) AS buckets
    FROM requests
    WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
      AND minute >= {from:DateTime} AND minute < {to:DateTime}
    GROUP BY time
)
ORDER BY time;

CREATE VIEW IF NOT EXISTS traffic_hourly AS
SELECT time, n AS requests, n_server AS server_errors, tallyhub_quantile(0.95, buckets, n) AS p95
FROM
(
    SELECT hour AS time, sum(requests) AS n, sumIf(requests, status >= 500) AS n_server, sumMap(duration_buckets) AS buckets
    FROM requests_hourly
    WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
      AND hour >= {from:DateTime} AND hour < {to:DateTime}
    GROUP BY time
)
ORDER BY time;

CREATE VIEW IF NOT EXISTS traffic_daily AS
SELECT time, n AS requests, n_server AS server_errors, tallyhub_quantile(0.95, buckets, n) AS p95
FROM
(
    SELECT day AS time, sum(requests) AS n, sumIf(requests, status >= 500) AS n_server, sumMap(duration_buckets) AS buckets
    FROM requests_daily
    WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
      AND day >= {from:DateTime} AND day < {to:DateTime}
    GROUP BY time
)
ORDER BY time;

-- Consumers in a window: their requests and errors, and whether they are new (first seen in the
-- window) or returning.
CREATE VIEW IF NOT EXISTS consumer_activity AS
SELECT
    r.consumer AS consumer,
    any(c.name) AS name,
    any(c.`group`) AS `group`,
    sum(r.requests) AS requests,
    sumIf(r.requests, r.status >= 400) AS errors,
    min(c.first_seen) AS first_seen,
    max(c.last_seen) AS last_seen,
    first_seen >= {from:DateTime} AS new
FROM requests_hourly AS r
LEFT JOIN (SELECT app, env, identifier, name, `group`, first_seen, last_seen FROM consumers FINAL) AS c
    ON c.app = r.app AND c.env = r.env AND c.identifier = r.consumer
WHERE r.app = {app:String} AND ({env:String} = '' OR r.env = {env:String}) AND r.consumer != ''
  AND r.hour >= toStartOfHour({from:DateTime}) AND r.hour < {to:DateTime}
GROUP BY r.consumer
ORDER BY requests DESC;

-- Validation errors and server errors per endpoint in a window, most frequent first.
CREATE VIEW IF NOT EXISTS validation_error_overview AS
SELECT method, route, location, message, type, sum(count) AS errors, uniqExact(consumer) AS consumers
FROM validation_errors
WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
  AND minute >= {from:DateTime} AND minute < {to:DateTime}
GROUP BY method, route, location, message, type
ORDER BY errors DESC;

CREATE VIEW IF NOT EXISTS server_error_overview AS
SELECT
    method, route, exception_type, message, fingerprint,
    sum(count) AS errors, min(minute) AS first_seen, max(minute) AS last_seen, any(stacktrace) AS stacktrace
FROM server_errors
WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
  AND minute >= {from:DateTime} AND minute < {to:DateTime}
GROUP BY method, route, exception_type, message, fingerprint
ORDER BY errors DESC;
