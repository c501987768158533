-- Alerts (`tallyhub alerts`, docs/alerts.md): the rules, each rule's current state, every
-- transition (history) and every notification attempt (deliveries). The hub evaluates the rules
-- every minute with the SQL of the dashboard (storage/alert_queries.py).
--   SELECT name, app, metric FROM alert_rules FINAL WHERE removed = 0
--   SELECT rule, state, since, value FROM alert_states FINAL ORDER BY rule
--   SELECT time, rule, before, after, value FROM alert_history WHERE app = 'shop' ORDER BY time DESC LIMIT 20

-- A rule, as JSON (alerts/rules.py: Rule), with the columns people filter on beside it.
-- `source`: cli, file (the rules file the hub reads at start) or dashboard.
CREATE TABLE IF NOT EXISTS alert_rules
(
    name       String,
    app        LowCardinality(String),
    metric     LowCardinality(String),
    rule       String,
    source     LowCardinality(String),
    removed    UInt8 DEFAULT 0,
    changed_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(changed_at)
ORDER BY name;

-- The state of each rule after its last evaluation: what survives a hub restart. No TTL: a rule
-- firing for a year is still firing.
CREATE TABLE IF NOT EXISTS alert_states
(
    rule         String,
    state        LowCardinality(String),
    since        Nullable(DateTime64(3, 'UTC')),
    breach_since Nullable(DateTime64(3, 'UTC')),
    clear_since  Nullable(DateTime64(3, 'UTC')),
    value        Nullable(Float64),
    evaluated_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY rule;

-- Every transition of every rule (`since`: firing, when the condition began to hold; resolved, when
-- it stopped; else the transition's time). Those into firing and resolved carry the notification they sent
-- (its id is what receivers deduplicate on) and the channels it went to. Kept 180 days (its own
-- retention: ALTER TABLE alert_history MODIFY TTL toDateTime(time) + INTERVAL N DAY).
CREATE TABLE IF NOT EXISTS alert_history
(
    time            DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    rule            String,
    app             LowCardinality(String),
    env             LowCardinality(String),
    metric          LowCardinality(String),
    before          LowCardinality(String),
    after           LowCardinality(String),
    value           Nullable(Float64),
    threshold       Float64,
    `condition`     String,
    since           DateTime64(3, 'UTC'),
    notification_id String,
    notification    String,
    channels        Array(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (rule, time)
TTL toDateTime(time) + INTERVAL 180 DAY;

-- Every attempt to deliver a notification to a channel (the channel's URL shown up to its host;
-- `channel_id`: a hash of the whole channel, which tells apart two that read alike).
-- `final`: delivered, or given up after the last retry.
CREATE TABLE IF NOT EXISTS alert_deliveries
(
    time            DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    notification_id String,
    rule            String,
    state           LowCardinality(String),
    channel         String,
    channel_id      String,
    attempt         UInt16,
    ok              Bool,
    final           Bool,
    error           String,
    duration_ms     Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (rule, time)
TTL toDateTime(time) + INTERVAL 180 DAY;
