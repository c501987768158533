-- People who may sign in to the hub's dashboard (`tallyhub users add NAME`). Only a scrypt hash
-- of the password is stored (`dashboard/passwords.py`). Every change inserts the whole row again;
-- FINAL keeps the last one per name, and a removed user is a row with `removed` set.
CREATE TABLE IF NOT EXISTS dashboard_users
(
    name           String,
    password_hash  String,
    created_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    changed_at     DateTime64(6, 'UTC') DEFAULT now64(6),
    removed        UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(changed_at)
ORDER BY name;
