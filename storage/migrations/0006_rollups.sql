-- Rollups of `requests`: per hour and per day, without the instance (which changes with every
-- deploy), kept by materialized views as rows arrive, each table with its own TTL (a view also
-- receives rows that are already expired in its source). Histograms are stored at one scale
-- (5) in every table, so they merge with sumMap across minutes, instances and levels. Read them
-- like `requests`, aggregating: sum(requests), sumMap(duration_buckets), min(duration_min), ...
-- A batch inserted again with the same deduplication token reaches them once: they deduplicate
-- too (the writer inserts with deduplicate_blocks_in_dependent_materialized_views).

CREATE TABLE IF NOT EXISTS requests_hourly
(
    hour                  DateTime('UTC') CODEC(Delta, ZSTD),
    app                   LowCardinality(String),
    env                   LowCardinality(String),
    service               LowCardinality(String),
    consumer              String,
    method                LowCardinality(String),
    route                 String,
    status                UInt16,
    requests              SimpleAggregateFunction(sum, UInt64),
    duration_sum          SimpleAggregateFunction(sum, Float64),
    duration_min          SimpleAggregateFunction(min, Float64),
    duration_max          SimpleAggregateFunction(max, Float64),
    duration_buckets      SimpleAggregateFunction(sumMap, Map(Int32, UInt64)),
    request_size_sum      SimpleAggregateFunction(sum, Float64),
    request_size_buckets  SimpleAggregateFunction(sumMap, Map(Int32, UInt64)),
    response_size_sum     SimpleAggregateFunction(sum, Float64),
    response_size_buckets SimpleAggregateFunction(sumMap, Map(Int32, UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (app, env, hour, route, method, status, consumer, service)
TTL hour + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS requests_hourly_mv TO requests_hourly AS
SELECT
    toStartOfHour(minute) AS hour,
    app, env, service, consumer, method, route, status,
    sum(requests) AS requests,
    sum(duration_sum) AS duration_sum,
    min(duration_min) AS duration_min,
    max(duration_max) AS duration_max,
    sumMap(duration_buckets) AS duration_buckets,
    sum(request_size_sum) AS request_size_sum,
    sumMap(request_size_buckets) AS request_size_buckets,
    sum(response_size_sum) AS response_size_sum,
    sumMap(response_size_buckets) AS response_size_buckets
FROM requests
GROUP BY hour, app, env, service, consumer, method, route, status;

-- what was stored before this migration
INSERT INTO requests_hourly
SELECT
    toStartOfHour(minute) AS hour,
    app, env, service, consumer, method, route, status,
    sum(requests), sum(duration_sum), min(duration_min), max(duration_max), sumMap(duration_buckets),
    sum(request_size_sum), sumMap(request_size_buckets), sum(response_size_sum), sumMap(response_size_buckets)
FROM requests
GROUP BY hour, app, env, service, consumer, method, route, status;

CREATE TABLE IF NOT EXISTS requests_daily
(
    day                  DateTime('UTC') CODEC(Delta, ZSTD),
    app                   LowCardinality(String),
    env                   LowCardinality(String),
    service               LowCardinality(String),
    consumer              String,
    method                LowCardinality(String),
    route                 String,
    status                UInt16,
    requests              SimpleAggregateFunction(sum, UInt64),
    duration_sum          SimpleAggregateFunction(sum, Float64),
    duration_min          SimpleAggregateFunction(min, Float64),
    duration_max          SimpleAggregateFunction(max, Float64),
    duration_buckets      SimpleAggregateFunction(sumMap, Map(Int32, UInt64)),
    request_size_sum      SimpleAggregateFunction(sum, Float64),
    request_size_buckets  SimpleAggregateFunction(sumMap, Map(Int32, UInt64)),
    response_size_sum     SimpleAggregateFunction(sum, Float64),
    response_size_buckets SimpleAggregateFunction(sumMap, Map(Int32, UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (app, env, day, route, method, status, consumer, service)
TTL day + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS requests_daily_mv TO requests_daily AS
SELECT
    toStartOfDay(minute) AS day,
    app, env, service, consumer, method, route, status,
    sum(requests) AS requests,
    sum(duration_sum) AS duration_sum,
    min(duration_min) AS duration_min,
    max(duration_max) AS duration_max,
    sumMap(duration_buckets) AS duration_buckets,
    sum(request_size_sum) AS request_size_sum,
    sumMap(request_size_buckets) AS request_size_buckets,
    sum(response_size_sum) AS response_size_sum,
    sumMap(response_size_buckets) AS response_size_buckets
FROM requests
GROUP BY day, app, env, service, consumer, method, route, status;

-- what was stored before this migration
INSERT INTO requests_daily
SELECT
    toStartOfDay(minute) AS day,
    app, env, service, consumer, method, route, status,
    sum(requests), sum(duration_sum), min(duration_min), max(duration_max), sumMap(duration_buckets),
    sum(request_size_sum), sumMap(request_size_buckets), sum(response_size_sum), sumMap(response_size_buckets)
FROM requests
GROUP BY day, app, env, service, consumer, method, route, status;
