-- floworchestrator schema for SQLite. Times are Unix epoch seconds (REAL).
-- This file is the whole current schema; migrations/ bring older databases here.

CREATE TABLE fo_schema_version (
    version INTEGER NOT NULL
);

-- Every manifest a run may pin, by content hash.
CREATE TABLE fo_manifests (
    manifest_id TEXT PRIMARY KEY,
    flow_id     TEXT NOT NULL,
    manifest    TEXT NOT NULL
);

CREATE TABLE fo_flows (
    flow_id     TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    manifest_id TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    updated_at  REAL NOT NULL
);

CREATE TABLE fo_runs (
    run_id          TEXT PRIMARY KEY,          -- UUIDv7: time-ordered
    flow_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    manifest_id     TEXT NOT NULL,
    trigger_key     TEXT NOT NULL,
    trigger_body    TEXT NOT NULL,
    trigger_headers TEXT NOT NULL,
    idempotency_key TEXT,
    open_steps      INTEGER NOT NULL DEFAULT 0, -- steps not yet final; the run is classified at 0
    created_at      REAL NOT NULL,
    finished_at     REAL,
    deadline        REAL                        -- the run times out then (flow timeout)
);
CREATE INDEX fo_runs_deadline ON fo_runs (deadline) WHERE status = 'Running' AND deadline IS NOT NULL;
CREATE UNIQUE INDEX fo_runs_idempotency ON fo_runs (flow_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX fo_runs_flow ON fo_runs (flow_id, run_id);
CREATE INDEX fo_runs_status ON fo_runs (status, run_id);
CREATE INDEX fo_runs_flow_status ON fo_runs (flow_id, status, run_id);  -- version 2: the runs list by flow and status
CREATE INDEX fo_runs_created ON fo_runs (created_at);  -- version 3: the time filter
CREATE INDEX fo_runs_status_created ON fo_runs (status, created_at);  -- version 3: runs per status over time

CREATE TABLE fo_steps (
    run_id      TEXT NOT NULL,
    step_key    TEXT NOT NULL,
    seq         INTEGER NOT NULL,              -- creation order within the run
    status      TEXT NOT NULL,
    waiting     INTEGER NOT NULL DEFAULT 0,    -- predecessors not yet final
    generation  INTEGER NOT NULL DEFAULT 0,    -- dispatches so far
    queued      INTEGER NOT NULL DEFAULT 0,    -- dispatched, waiting for a claim
    attempts    INTEGER NOT NULL DEFAULT 0,
    attempt_base INTEGER NOT NULL DEFAULT 0,   -- attempts before the last retry from the API
    inputs      TEXT,
    output      TEXT,
    error       TEXT,
    started_at  REAL,
    finished_at REAL,
    owner       TEXT,
    lease_until REAL,
    not_before  REAL,
    queued_at   REAL,
    trace       TEXT,                          -- why it ended so: condition traces of a skipped step
    first_started_at REAL,                     -- first execution since the last retry (polling timeouts)
    waiting_signal TEXT,                       -- a WaitForSignal step parked until this signal arrives
    loop_item   TEXT,                          -- a ForEach child: its item (JSON)
    loop_total  INTEGER NOT NULL DEFAULT 0,    -- a ForEach step: items in all,
    loop_started INTEGER NOT NULL DEFAULT 0,   --   items started,
    loop_done   INTEGER NOT NULL DEFAULT 0,    --   items finished
    PRIMARY KEY (run_id, step_key)
) WITHOUT ROWID;
CREATE INDEX fo_steps_parked ON fo_steps (run_id, waiting_signal) WHERE waiting_signal IS NOT NULL;
CREATE INDEX fo_steps_leases ON fo_steps (lease_until) WHERE status = 'Running';
CREATE INDEX fo_steps_queued ON fo_steps (coalesce(not_before, queued_at)) WHERE queued = 1;

-- The dispatch ledger: a (run, step, generation) is dispatched once.
CREATE TABLE fo_dispatches (
    run_id        TEXT NOT NULL,
    step_key      TEXT NOT NULL,
    generation    INTEGER NOT NULL,
    dispatched_at REAL NOT NULL,
    PRIMARY KEY (run_id, step_key, generation)
) WITHOUT ROWID;

CREATE TABLE fo_attempts (
    run_id      TEXT NOT NULL,
    step_key    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    owner       TEXT,
    started_at  REAL NOT NULL,
    finished_at REAL NOT NULL,
    error       TEXT
);
CREATE INDEX fo_attempts_step ON fo_attempts (run_id, step_key, attempt);

CREATE TABLE fo_events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    step_key TEXT,
    kind     TEXT NOT NULL,
    data     TEXT,
    at       REAL NOT NULL
);
CREATE INDEX fo_events_run ON fo_events (run_id, event_id);

-- Signals sent to runs; kept when they arrive before their step waits.
CREATE TABLE fo_signals (
    signal_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    consumed_by TEXT,
    consumed_at REAL
);
CREATE INDEX fo_signals_run ON fo_signals (run_id, name, signal_id);

-- The cron fire ledger: each (flow, trigger, fire time) starts one run, whichever instance gets there first.
CREATE TABLE fo_cron_fires (
    flow_id   TEXT NOT NULL,
    trigger   TEXT NOT NULL,
    fire_time REAL NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (flow_id, trigger, fire_time)
) WITHOUT ROWID;
CREATE INDEX fo_cron_fires_run ON fo_cron_fires (run_id);  -- version 3: prune finds a run's fire row

-- Per cron trigger: paused, and an expression that overrides the flow's own.
CREATE TABLE fo_schedules (
    flow_id    TEXT NOT NULL,
    trigger    TEXT NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    expression TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (flow_id, trigger)
) WITHOUT ROWID;
