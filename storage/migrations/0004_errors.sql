-- Validation errors: one row per minute x app x env x instance x consumer x method x route x
-- (location, message, type), as the client's error responses described them; always aggregate
-- with sum(count). The invalid input itself is never sent.
--   SELECT route, location, message, type, sum(count) FROM validation_errors
--   WHERE app = 'shop' AND minute > now() - INTERVAL 1 DAY GROUP BY ALL ORDER BY 5 DESC
CREATE TABLE IF NOT EXISTS validation_errors
(
    minute     DateTime('UTC') CODEC(Delta, ZSTD),
    app        LowCardinality(String),
    env        LowCardinality(String),
    service    LowCardinality(String),
    instance   String,
    consumer   String,
    method     LowCardinality(String),
    route      String,
    location   String,
    message    String,
    type       LowCardinality(String),
    count      UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (app, env, minute, route, method)
TTL minute + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

-- Server errors (unhandled exceptions answered with a 5xx): one row per minute x app x env x
-- instance x consumer x method x route x (exception type, message, fingerprint), with the stack
-- trace of its first occurrence in that minute (up to 64 KB, innermost frames kept). The
-- fingerprint tells apart the places an exception type is raised from.
--   SELECT exception_type, message, sum(count), any(stacktrace) FROM server_errors
--   WHERE app = 'shop' GROUP BY exception_type, message, fingerprint ORDER BY 3 DESC
CREATE TABLE IF NOT EXISTS server_errors
(
    minute          DateTime('UTC') CODEC(Delta, ZSTD),
    app             LowCardinality(String),
    env             LowCardinality(String),
    service         LowCardinality(String),
    instance        String,
    consumer        String,
    method          LowCardinality(String),
    route           String,
    exception_type  String,
    message         String,
    fingerprint     String,
    stacktrace      String CODEC(ZSTD(3)),
    count           UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (app, env, minute, route, exception_type, fingerprint)
TTL minute + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;
