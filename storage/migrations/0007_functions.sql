-- SQL functions over the stored histograms (base-2 exponential buckets at scale 5: bucket k holds
-- (2^(k/32), 2^((k+1)/32)]; the values at 0 are `total` minus the bucket counts). Pass them an
-- aggregated histogram and its count, at any level:
--   SELECT route, tallyhub_quantile(0.95, sumMap(duration_buckets), sum(requests)) AS p95_s
--   FROM requests_hourly WHERE app = 'my-api' AND hour >= now() - INTERVAL 1 DAY GROUP BY route
-- tallyhub_quantile(q, buckets, total): the q-quantile (nearest rank), as the geometric middle of
-- its bucket (within 1.1 % of the bucket's values); NaN when total is 0.
CREATE OR REPLACE FUNCTION tallyhub_quantile AS (q, buckets, total) ->
    if(total = 0, nan,
       if(q * total <= total - arraySum(mapValues(buckets)), 0.,
          pow(2., (arraySort(mapKeys(buckets))[
                       arrayFirstIndex(c -> c >= q * total - (total - arraySum(mapValues(buckets))),
                                       arrayCumSum(arrayMap(k -> buckets[k], arraySort(mapKeys(buckets)))))
                   ] + 0.5) / 32)));

-- tallyhub_count_le(threshold, buckets, total): how many values are at most `threshold` (zeros
-- included; a bucket counts when its middle is at most the threshold).
CREATE OR REPLACE FUNCTION tallyhub_count_le AS (threshold, buckets, total) ->
    (total - arraySum(mapValues(buckets)))
    + arraySum(arrayMap(k -> if(pow(2., (k + 0.5) / 32) <= threshold, buckets[k], 0), mapKeys(buckets)));

-- tallyhub_apdex(t, buckets, total): Apdex for a threshold of `t` seconds: (satisfied + tolerating
-- / 2) / total, satisfied at most t, tolerating at most 4 t; NaN when total is 0.
CREATE OR REPLACE FUNCTION tallyhub_apdex AS (t, buckets, total) ->
    if(total = 0, nan, (tallyhub_count_le(t, buckets, total) + tallyhub_count_le(4 * t, buckets, total)) / (2 * total));

-- Endpoints whose 4xx answers are expected (a 404 of a lookup, a 401 of a login): they do not
-- count as client errors in `endpoint_overview`. Add one with
--   INSERT INTO expected_client_errors (app, method, route) VALUES ('my-api', 'GET', '/users/{id}')
CREATE TABLE IF NOT EXISTS expected_client_errors
(
    app     LowCardinality(String),
    method  LowCardinality(String),
    route   String,
    added   DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree
ORDER BY (app, method, route);
