-- What apps say about themselves once per process start (the tallyhub.startup event).

-- Endpoints: one row per app x env x method x route once merged. Read with FINAL (or aggregate
-- with min(first_seen), max(last_seen), max(latest)), since unmerged parts hold one row per
-- start-up event:
--   SELECT app, env, method, route, summary, first_seen, last_seen FROM endpoints FINAL
-- first_seen / last_seen: the earliest / latest start-up event that listed the endpoint.
-- latest: (time, service, summary, description) of the latest event that listed it (max of a
-- tuple compares the time first), read through the ALIAS columns service, summary, description.
CREATE TABLE IF NOT EXISTS endpoints
(
    app         LowCardinality(String),
    env         LowCardinality(String),
    method      LowCardinality(String),
    route       String,
    first_seen  SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    latest      SimpleAggregateFunction(max, Tuple(seen DateTime64(3, 'UTC'), service String, summary String, description String)),
    service     String ALIAS latest.service,
    summary     String ALIAS latest.summary,
    description String ALIAS latest.description
)
ENGINE = AggregatingMergeTree
ORDER BY (app, env, method, route)
TTL toDateTime(last_seen) + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

-- Instances: one row per process start (app x env x service x instance x started_at); the same
-- event delivered twice reads as one row with FINAL. started_at is the event's time (the hub's
-- receipt time if the client sent none, or one ahead of the hub's clock).
CREATE TABLE IF NOT EXISTS instances
(
    app         LowCardinality(String),
    env         LowCardinality(String),
    service     LowCardinality(String),
    instance    String,
    host        String,
    pid         UInt32,
    versions    Map(String, String),
    started_at  DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (app, env, service, instance, started_at)
TTL toDateTime(started_at) + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

-- OpenAPI documents: the latest per app x env (the one of the latest start-up) with FINAL:
--   SELECT document FROM openapi FINAL WHERE app = 'my-api' AND env = 'prod'
CREATE TABLE IF NOT EXISTS openapi
(
    app         LowCardinality(String),
    env         LowCardinality(String),
    service     String,
    instance    String,
    started_at  DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    document    String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree(started_at)
ORDER BY (app, env)
TTL toDateTime(started_at) + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;

-- Per process start: versions, when it started, when it was last seen (the latest minute it has
-- in `requests`, or started_at if it served nothing) and its uptime in between. Assumes that
-- service.instance.id is unique per process, as the tallyhub client and OpenTelemetry make it.
CREATE VIEW IF NOT EXISTS instance_uptime AS
SELECT
    i.app AS app,
    i.env AS env,
    i.service AS service,
    i.instance AS instance,
    i.host AS host,
    i.pid AS pid,
    i.versions AS versions,
    i.started_at AS started_at,
    greatest(i.started_at, ifNull(r.last_minute, i.started_at)) AS last_seen,
    toUInt64(greatest(0, dateDiff('second', i.started_at, last_seen))) AS uptime_s,
    formatReadableTimeDelta(uptime_s) AS uptime
FROM (SELECT * FROM instances FINAL) AS i
LEFT JOIN
(
    SELECT app, env, service, instance, max(minute) AS last_minute
    FROM requests
    GROUP BY app, env, service, instance
) AS r
ON i.app = r.app AND i.env = r.env AND i.service = r.service AND i.instance = r.instance;
