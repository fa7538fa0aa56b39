-- Does a schema whose claim and completion are HOT updates drain faster on PostgreSQL?
-- Three layouts of the jobs table, each loaded with 40,000 available jobs and drained by one
-- backend in a loop of 1,000-row claims and completions, one commit each (as the engine does,
-- without the round trips). The time printed in each part is its drain.
--
--   xa  the shipped layout: partial indexes on `state`, so no claim or completion is HOT
--   xb  available jobs in a `ready` table, leases in `running`, finished ones in `finished`:
--       the jobs table has only its primary key and its updates are HOT (89 % of them, by
--       pg_stat_user_tables read a while after: its counters lag the statements)
--   xc  `ready` alone, no lease or finished bookkeeping (not a usable design: the floor of xb)
--
-- Run: psql -q postgres://postgres@127.0.0.1:5432/test -f docs/experiments/pg-hot-claims.sql
-- xb and xc copy xa's table, so the parts run in order. It leaves the schemas xa, xb and xc
-- behind; drop them after.

\echo xa: the shipped layout
DROP SCHEMA IF EXISTS xa CASCADE; CREATE SCHEMA xa; SET search_path=xa;
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, queue text NOT NULL, kind text NOT NULL, args jsonb NOT NULL,
    state text NOT NULL CHECK (state IN ('scheduled','available','running','retryable','completed','discarded','cancelled')),
    priority integer NOT NULL DEFAULT 0, attempt integer NOT NULL DEFAULT 0, max_attempts integer NOT NULL CHECK (max_attempts > 0),
    delivery text NOT NULL, unique_key text, scheduled_at timestamptz NOT NULL, created_at timestamptz NOT NULL,
    attempted_at timestamptz, completed_at timestamptz, lease_owner text, lease_token bigint, lease_expires_at timestamptz,
    cancel_requested_at timestamptz, step text, errors jsonb NOT NULL DEFAULT '[]', history jsonb NOT NULL DEFAULT '[]'
) WITH (fillfactor=50, autovacuum_enabled=false);
CREATE INDEX ON jobs (queue, priority DESC, id) WHERE state = 'available';
CREATE INDEX ON jobs (queue, scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX ON jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX ON jobs (unique_key) WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable');
CREATE INDEX ON jobs (completed_at) WHERE state IN ('completed', 'discarded', 'cancelled');
CREATE INDEX ON jobs (id) WHERE state = 'discarded';
CREATE INDEX ON jobs (id) WHERE state = 'cancelled';
CREATE INDEX ON jobs (id) WHERE state = 'running' AND cancel_requested_at IS NOT NULL;
INSERT INTO jobs (queue, kind, args, state, max_attempts, delivery, scheduled_at, created_at)
  SELECT 'q', 'noop', jsonb_build_object('i', g), 'available', 3, 'at-least-once', now(), now() FROM generate_series(1,40000) g;
CHECKPOINT;
\timing on
DO $$
DECLARE ids bigint[]; n int := 0;
BEGIN
  LOOP
    WITH c AS (UPDATE jobs SET state='running', attempt=attempt+1, attempted_at=now(), lease_owner='p1', lease_token=attempt+1, lease_expires_at=now()+interval '30s'
      WHERE id IN (SELECT id FROM jobs WHERE state='available' AND queue='q' ORDER BY priority DESC, id LIMIT 1000 FOR UPDATE SKIP LOCKED)
      RETURNING id, kind, args) SELECT array_agg(id) INTO ids FROM c;
    EXIT WHEN ids IS NULL;
    COMMIT;
    UPDATE jobs SET state='completed', completed_at=now(), lease_expires_at=NULL WHERE id = ANY(ids) AND state='running' AND lease_token IS NOT NULL;
    COMMIT;
  END LOOP;
END $$;
\timing off

\echo xb: ready, running and finished tables
DROP SCHEMA IF EXISTS xb CASCADE; CREATE SCHEMA xb; SET search_path=xb;
-- xa's columns, defaults and checks, without its partial indexes.
CREATE TABLE jobs (LIKE xa.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    WITH (fillfactor=50, autovacuum_enabled=false);
ALTER TABLE jobs ADD PRIMARY KEY (id);
CREATE TABLE ready (queue text NOT NULL, priority int NOT NULL, id bigint NOT NULL) WITH (autovacuum_enabled=false);
CREATE INDEX ON ready (queue, priority DESC, id);
CREATE TABLE running (id bigint PRIMARY KEY, lease_expires_at timestamptz NOT NULL) WITH (autovacuum_enabled=false);
CREATE INDEX ON running (lease_expires_at);
CREATE TABLE finished (id bigint NOT NULL, completed_at timestamptz NOT NULL) WITH (autovacuum_enabled=false);
CREATE INDEX ON finished (completed_at);
WITH j AS (INSERT INTO jobs (queue, kind, args, state, max_attempts, delivery, scheduled_at, created_at)
  SELECT 'q', 'noop', jsonb_build_object('i', g), 'available', 3, 'at-least-once', now(), now() FROM generate_series(1,40000) g RETURNING id, queue, priority)
  INSERT INTO ready SELECT queue, priority, id FROM j;
CHECKPOINT;
\timing on
DO $$
DECLARE ids bigint[]; n int := 0;
BEGIN
  LOOP
    WITH r AS (DELETE FROM ready WHERE ctid IN (SELECT ctid FROM ready WHERE queue='q' ORDER BY priority DESC, id LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id),
      c AS (UPDATE jobs SET state='running', attempt=attempt+1, attempted_at=now(), lease_owner='p1', lease_token=attempt+1, lease_expires_at=now()+interval '30s'
      FROM r WHERE jobs.id = r.id RETURNING jobs.id, kind, args, lease_expires_at),
      l AS (INSERT INTO running SELECT id, lease_expires_at FROM c)
      SELECT array_agg(id) INTO ids FROM c;
    EXIT WHEN ids IS NULL;
    COMMIT;
    WITH d AS (DELETE FROM running WHERE id = ANY(ids)),
      u AS (UPDATE jobs SET state='completed', completed_at=now(), lease_expires_at=NULL WHERE id = ANY(ids) AND state='running' AND lease_token IS NOT NULL RETURNING id, completed_at)
      INSERT INTO finished SELECT id, completed_at FROM u;
    COMMIT;
  END LOOP;
END $$;
\timing off

\echo xc: ready table alone
DROP SCHEMA IF EXISTS xc CASCADE; CREATE SCHEMA xc; SET search_path=xc;
-- xa's columns, defaults and checks, without its partial indexes.
CREATE TABLE jobs (LIKE xa.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)
    WITH (fillfactor=50, autovacuum_enabled=false);
ALTER TABLE jobs ADD PRIMARY KEY (id);
CREATE TABLE ready (queue text NOT NULL, priority int NOT NULL, id bigint NOT NULL) WITH (autovacuum_enabled=false);
CREATE INDEX ON ready (queue, priority DESC, id);
WITH j AS (INSERT INTO jobs (queue, kind, args, state, max_attempts, delivery, scheduled_at, created_at)
  SELECT 'q', 'noop', jsonb_build_object('i', g), 'available', 3, 'at-least-once', now(), now() FROM generate_series(1,40000) g RETURNING id, queue, priority)
  INSERT INTO ready SELECT queue, priority, id FROM j;
CHECKPOINT;
\timing on
DO $$
DECLARE ids bigint[]; n int := 0;
BEGIN
  LOOP
    WITH r AS (DELETE FROM ready WHERE ctid IN (SELECT ctid FROM ready WHERE queue='q' ORDER BY priority DESC, id LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING id),
      c AS (UPDATE jobs SET state='running', attempt=attempt+1, attempted_at=now(), lease_owner='p1', lease_token=attempt+1, lease_expires_at=now()+interval '30s'
      FROM r WHERE jobs.id = r.id RETURNING jobs.id, kind, args, lease_expires_at)
      SELECT array_agg(id) INTO ids FROM c;
    EXIT WHEN ids IS NULL;
    COMMIT;
    UPDATE jobs SET state='completed', completed_at=now(), lease_expires_at=NULL WHERE id = ANY(ids) AND state='running' AND lease_token IS NOT NULL;
    COMMIT;
  END LOOP;
END $$;
\timing off
RESET search_path;
