-- An instance is seen by its requests and, in a minute without requests, by the `process.uptime`
-- gauge its client sends instead (stored in `metrics`): an idle instance stays up, and its
-- uptime runs until its last export, not its last request.
--   SELECT instance, uptime FROM instance_uptime WHERE app = 'my-api' ORDER BY last_seen DESC
CREATE OR REPLACE VIEW instance_uptime AS
SELECT
    i.app AS app,
    i.env AS env,
    i.service AS service,
    i.instance AS instance,
    i.host AS host,
    i.pid AS pid,
    i.versions AS versions,
    i.started_at AS started_at,
    greatest(i.started_at, ifNull(r.last_minute, i.started_at), ifNull(h.last_heartbeat, i.started_at)) AS last_seen,
    toUInt64(greatest(0, dateDiff('second', i.started_at, last_seen))) AS uptime_s,
    formatReadableTimeDelta(uptime_s) AS uptime
FROM (SELECT * FROM instances FINAL) AS i
LEFT JOIN
(
    SELECT app, env, service, instance, max(minute) AS last_minute
    FROM requests
    GROUP BY app, env, service, instance
) AS r
ON i.app = r.app AND i.env = r.env AND i.service = r.service AND i.instance = r.instance
LEFT JOIN
(
    SELECT app, env, service, instance, max(time) AS last_heartbeat
    FROM metrics
    WHERE name = 'process.uptime'
    GROUP BY app, env, service, instance
) AS h
ON i.app = h.app AND i.env = h.env AND i.service = h.service AND i.instance = h.instance;
