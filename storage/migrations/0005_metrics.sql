-- Every metric that is not an HTTP server metric nor a tallyhub error count: one row per data
-- point, whatever its kind, so that nothing a client sends is dropped. Cumulative sums and
-- histograms are stored as deltas (sum() over time is right); gauges and summaries as sent.
--   SELECT name, sum(value) FROM metrics WHERE app = 'my-api' AND kind = 'sum' GROUP BY name
--   SELECT toStartOfMinute(time) AS m, avg(value) FROM metrics WHERE name = 'process.cpu.utilization' GROUP BY m
-- value: a gauge's value, a sum's delta, a summary's highest quantile. Histograms: count, sum,
-- min, max (0 when unknown), explicit `bounds` + `bucket_counts`, or exponential `scale`,
-- `zero_count`, `positive_offset` + `positive_counts` (and negative). Summaries: `bounds` holds
-- the quantiles.
CREATE TABLE IF NOT EXISTS metrics
(
    time             DateTime64(6, 'UTC') CODEC(Delta, ZSTD),
    start_time       DateTime64(6, 'UTC') CODEC(Delta, ZSTD),
    app              LowCardinality(String),
    env              LowCardinality(String),
    service          LowCardinality(String),
    instance         String,
    name             LowCardinality(String),
    unit             LowCardinality(String),
    kind             Enum8('gauge' = 1, 'sum' = 2, 'histogram' = 3, 'exponential_histogram' = 4, 'summary' = 5),
    monotonic        UInt8,
    attributes       Map(LowCardinality(String), String),
    value            Float64,
    count            UInt64,
    sum              Float64,
    min              Float64,
    max              Float64,
    bounds           Array(Float64),
    bucket_counts    Array(UInt64),
    scale            Int32,
    zero_count       UInt64,
    positive_offset  Int32,
    positive_counts  Array(UInt64),
    negative_offset  Int32,
    negative_counts  Array(UInt64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (app, env, name, time)
TTL toDateTime(time) + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;
