-- floworchestrator schema for PostgreSQL. Times are Unix epoch seconds (double precision), like SQLite,
-- so records read back identically from every store. JSON is kept as text: it round-trips exactly.
-- Keys compare byte-wise (COLLATE "C") whatever the database's collation: ForEach children are found
-- by key range, and runs are listed in id (= time) order.
-- This file is the whole current schema; migrations/ bring older databases here.

CREATE TABLE fo_schema_version (
    version integer NOT NULL
);

-- Every manifest a run may pin, by content hash.
CREATE TABLE fo_manifests (
    manifest_id text COLLATE "C" PRIMARY KEY,
    flow_id     text COLLATE "C" NOT NULL,
    manifest    text NOT NULL
);

CREATE TABLE fo_flows (
    flow_id     text COLLATE "C" PRIMARY KEY,
    version     text NOT NULL,
    manifest_id text COLLATE "C" NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    updated_at  double precision NOT NULL
);

CREATE TABLE fo_runs (
    run_id          text COLLATE "C" PRIMARY KEY,   -- UUIDv7: time-ordered
    flow_id         text COLLATE "C" NOT NULL,
    status          text NOT NULL,
    manifest_id     text COLLATE "C" NOT NULL,
    trigger_key     text NOT NULL,
    trigger_body    text NOT NULL,
    trigger_headers text NOT NULL,
    idempotency_key text,
    open_steps      integer NOT NULL DEFAULT 0,     -- steps not yet final; the run is classified at 0
    created_at      double precision NOT NULL,
    finished_at     double precision,
    deadline        double precision                -- the run times out then (flow timeout)
);
CREATE INDEX fo_runs_deadline ON fo_runs (deadline) WHERE status = 'Running' AND deadline IS NOT NULL;
CREATE UNIQUE INDEX fo_runs_idempotency ON fo_runs (flow_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX fo_runs_flow ON fo_runs (flow_id, run_id);
CREATE INDEX fo_runs_status ON fo_runs (status, run_id);
CREATE INDEX fo_runs_flow_status ON fo_runs (flow_id, status, run_id);  -- version 2: the runs list by flow and status
CREATE INDEX fo_runs_created ON fo_runs (created_at);  -- version 3: the time filter
CREATE INDEX fo_runs_status_created ON fo_runs (status, created_at);  -- version 3: runs per status over time

CREATE TABLE fo_steps (
    run_id      text COLLATE "C" NOT NULL,
    step_key    text COLLATE "C" NOT NULL,
    seq         integer NOT NULL,              -- creation order within the run
    status      text NOT NULL,
    waiting     integer NOT NULL DEFAULT 0,    -- predecessors not yet final
    generation  integer NOT NULL DEFAULT 0,    -- dispatches so far
    queued      boolean NOT NULL DEFAULT false, -- dispatched, waiting for a claim
    attempts    integer NOT NULL DEFAULT 0,
    attempt_base integer NOT NULL DEFAULT 0,   -- attempts before the last retry from the API
    inputs      text,
    output      text,
    error       text,
    started_at  double precision,
    finished_at double precision,
    owner       text,
    lease_until double precision,
    not_before  double precision,
    queued_at   double precision,
    trace       text,                          -- why it ended so: condition traces of a skipped step
    first_started_at double precision,         -- first execution since the last retry (polling timeouts)
    waiting_signal text,                       -- a WaitForSignal step parked until this signal arrives
    loop_item   text,                          -- a ForEach child: its item (JSON)
    loop_total  integer NOT NULL DEFAULT 0,    -- a ForEach step: items in all,
    loop_started integer NOT NULL DEFAULT 0,   --   items started,
    loop_done   integer NOT NULL DEFAULT 0,    --   items finished
    PRIMARY KEY (run_id, step_key)
);
CREATE INDEX fo_steps_parked ON fo_steps (run_id, waiting_signal) WHERE waiting_signal IS NOT NULL;
CREATE INDEX fo_steps_leases ON fo_steps (lease_until) WHERE status = 'Running';
CREATE INDEX fo_steps_queued ON fo_steps ((coalesce(not_before, queued_at))) WHERE queued;

-- The dispatch ledger: a (run, step, generation) is dispatched once.
CREATE TABLE fo_dispatches (
    run_id        text COLLATE "C" NOT NULL,
    step_key      text COLLATE "C" NOT NULL,
    generation    integer NOT NULL,
    dispatched_at double precision NOT NULL,
    PRIMARY KEY (run_id, step_key, generation)
);

CREATE TABLE fo_attempts (
    attempt_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order
    run_id      text COLLATE "C" NOT NULL,
    step_key    text COLLATE "C" NOT NULL,
    attempt     integer NOT NULL,
    generation  integer NOT NULL,
    status      text NOT NULL,
    owner       text,
    started_at  double precision NOT NULL,
    finished_at double precision NOT NULL,
    error       text
);
CREATE INDEX fo_attempts_step ON fo_attempts (run_id, step_key, attempt);

CREATE TABLE fo_events (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   text COLLATE "C" NOT NULL,
    step_key text COLLATE "C",
    kind     text NOT NULL,
    data     text,
    at       double precision NOT NULL
);
CREATE INDEX fo_events_run ON fo_events (run_id, event_id);

-- Signals sent to runs; kept when they arrive before their step waits.
CREATE TABLE fo_signals (
    signal_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      text COLLATE "C" NOT NULL,
    name        text NOT NULL,
    payload     text NOT NULL,
    created_at  double precision NOT NULL,
    consumed_by text,
    consumed_at double precision
);
CREATE INDEX fo_signals_run ON fo_signals (run_id, name, signal_id);

-- The cron fire ledger: each (flow, trigger, fire time) starts one run, whichever instance gets there first.
CREATE TABLE fo_cron_fires (
    flow_id   text COLLATE "C" NOT NULL,
    trigger   text NOT NULL,
    fire_time double precision NOT NULL,
    run_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (flow_id, trigger, fire_time)
);
CREATE INDEX fo_cron_fires_run ON fo_cron_fires (run_id);  -- version 3: prune finds a run's fire row

-- Per cron trigger: paused, and an expression that overrides the flow's own.
CREATE TABLE fo_schedules (
    flow_id    text COLLATE "C" NOT NULL,
    trigger    text NOT NULL,
    paused     boolean NOT NULL DEFAULT false,
    expression text,
    updated_at double precision NOT NULL,
    PRIMARY KEY (flow_id, trigger)
);

-- Version 3: the runs search, by trigrams, when the pg_trgm extension can be had (see migration 0003).
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'floworchestrator: pg_trgm is not available (%), runs search will scan', SQLERRM;
    END;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX fo_runs_search ON fo_runs USING gin '
                '((run_id || '' '' || flow_id || '' '' || trigger_body) gin_trgm_ops)';
    END IF;
END
$$;
