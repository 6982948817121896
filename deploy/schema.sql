-- perfcgi: the schema and seed data of SPEC section 4, shared by the local stack
-- (deploy/stack.sh: psql -v ON_ERROR_STOP=1 -f deploy/schema.sql) and docker-compose
-- (mounted into /docker-entrypoint-initdb.d/ of the postgres image).
--
-- Loading it again is harmless: the table is created only if missing and seeded only
-- while empty, all in one transaction. That transaction first takes an advisory lock,
-- so loaders running at the same time (two stacks starting at once) run one after the
-- other instead of racing on CREATE TABLE or both seeding.
--
-- The data is deterministic, so tests can compute the expected aggregates themselves.
-- Row g, for g = 1 .. 100000 (on a fresh database id = g):
--
--     category = g % 100                        -> 1000 rows in each of 0 .. 99
--     name     = 'item-' || g, zero-padded to 6 digits ('item-000001')
--     value    = ((g * 7919) % 100000) / 100    -> 0.00 .. 999.99, two decimals
--
-- 7919 is prime and coprime with 100000, so the 100000 values are all different; e.g.
-- for category 7 (g = 7, 107, ..., 99907) the values are ((g * 7919) % 100000) / 100.
--
-- Deliberately NO index on category: /cached-data's aggregate is meant to be a real
-- slow query (a sequential scan), which is what the Redis cache in front of it saves.

\set ON_ERROR_STOP on

SET client_min_messages = warning;  -- no "relation already exists, skipping" notices

BEGIN;

-- Serialises concurrent loaders of this file (released at COMMIT); readers are not blocked.
DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('perfcgi deploy/schema.sql')); END $$;

CREATE TABLE IF NOT EXISTS items (
    id       serial PRIMARY KEY,
    category int            NOT NULL,
    name     text           NOT NULL,
    value    numeric(12, 2) NOT NULL
);

INSERT INTO items (category, name, value)
SELECT g % 100,
       'item-' || lpad(g::text, 6, '0'),
       ((g * 7919) % 100000) / 100.0
  FROM generate_series(1, 100000) AS g
 WHERE NOT EXISTS (SELECT 1 FROM items)
 ORDER BY g;

-- Fresh statistics, so the planner knows the table's size from the first query.
ANALYZE items;

COMMIT;
