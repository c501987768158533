-- Apps and their key hashes. A key is shown once, at creation; only its SHA-256 is kept.
CREATE TABLE IF NOT EXISTS apps
(
    name       String,
    key_hash   String,
    created_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY name;

-- One row per minute x app x env x instance x consumer x method x route x status (a row may be
-- split over several inserts: always aggregate with sum()).
-- *_buckets: base-2 exponential histogram buckets at scale 5 (bucket k holds the values in
-- (2^(k/32), 2^((k+1)/32)]); the values at 0 are counted by `requests` minus the bucket total.
CREATE TABLE IF NOT EXISTS requests
(
    minute                DateTime('UTC') CODEC(Delta, ZSTD),
    app                   LowCardinality(String),
    env                   LowCardinality(String),
    service               LowCardinality(String),
    instance              String,
    consumer              String,
    method                LowCardinality(String),
    route                 String,
    status                UInt16,
    requests              UInt64,
    duration_sum          Float64,
    duration_min          Float64,
    duration_max          Float64,
    duration_buckets      Map(Int32, UInt64),
    request_size_sum      Float64,
    request_size_buckets  Map(Int32, UInt64),
    response_size_sum     Float64,
    response_size_buckets Map(Int32, UInt64)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (app, env, minute, route, method, status)
TTL minute + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;
