-- API consumers: one row per app x env x consumer once merged. Read with FINAL (or aggregate with
-- min(first_seen), max(last_seen), max(latest)):
--   SELECT app, env, identifier, name, "group", first_seen, last_seen FROM consumers FINAL
-- first_seen / last_seen: the first / last minute with a request of that consumer. latest: the
-- (minute, name, group) the client sent most recently, read through the ALIAS columns.
CREATE TABLE IF NOT EXISTS consumers
(
    app         LowCardinality(String),
    env         LowCardinality(String),
    identifier  String,
    first_seen  SimpleAggregateFunction(min, DateTime('UTC')),
    last_seen   SimpleAggregateFunction(max, DateTime('UTC')),
    latest      SimpleAggregateFunction(max, Tuple(seen DateTime('UTC'), name String, `group` String)),
    name        String ALIAS latest.name,
    `group`     String ALIAS latest.`group`
)
ENGINE = AggregatingMergeTree
ORDER BY (app, env, identifier)
TTL last_seen + INTERVAL 12 MONTH
SETTINGS non_replicated_deduplication_window = 10000;
