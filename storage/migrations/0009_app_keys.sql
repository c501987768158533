-- Keys that are revoked (`tallyhub apps revoke`) or replaced (`tallyhub apps rotate`). Every change
-- to an app inserts its whole row again: FINAL keeps the last one per name.
ALTER TABLE apps ADD COLUMN IF NOT EXISTS key_created_at DateTime64(3, 'UTC') DEFAULT created_at;

-- NULL while the key works.
ALTER TABLE apps ADD COLUMN IF NOT EXISTS revoked_at Nullable(DateTime64(3, 'UTC'));
