-- Named queries for SQLite. Parameters are always bound, never interpolated.

-- name: get_schema_version
SELECT version FROM fo_schema_version;

-- name: set_schema_version
UPDATE fo_schema_version SET version = ?;

-- name: insert_schema_version
INSERT INTO fo_schema_version (version) VALUES (?);

-- name: upsert_manifest
INSERT INTO fo_manifests (manifest_id, flow_id, manifest) VALUES (?, ?, ?)
ON CONFLICT (manifest_id) DO NOTHING;

-- name: upsert_flow
INSERT INTO fo_flows (flow_id, version, manifest_id, enabled, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (flow_id) DO UPDATE SET version = excluded.version, manifest_id = excluded.manifest_id,
    updated_at = excluded.updated_at;

-- name: list_flows
SELECT f.flow_id, f.version, f.manifest_id, m.manifest, f.enabled, f.updated_at
FROM fo_flows f JOIN fo_manifests m ON m.manifest_id = f.manifest_id
ORDER BY f.flow_id;

-- name: set_flow_enabled
UPDATE fo_flows SET enabled = ?, updated_at = ? WHERE flow_id = ?;

-- name: flow_enabled
SELECT enabled FROM fo_flows WHERE flow_id = ?;

-- name: get_manifest
SELECT manifest FROM fo_manifests WHERE manifest_id = ?;

-- name: find_run_by_key
SELECT run_id FROM fo_runs WHERE flow_id = ? AND idempotency_key = ?;

-- name: insert_run
INSERT INTO fo_runs (run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers,
    idempotency_key, open_steps, created_at, finished_at, deadline)
VALUES (?, ?, 'Running', ?, ?, ?, ?, ?, ?, ?, NULL, ?);

-- name: insert_step
INSERT INTO fo_steps (run_id, step_key, seq, status, waiting) VALUES (?, ?, ?, 'Pending', ?);

-- name: run_status
SELECT status FROM fo_runs WHERE run_id = ?;

-- name: load_steps
SELECT step_key, status, generation, queued, waiting_signal IS NOT NULL FROM fo_steps WHERE run_id = ?;

-- name: run_flow
SELECT flow_id FROM fo_runs WHERE run_id = ?;

-- name: load_statuses
SELECT step_key, status FROM fo_steps WHERE run_id = ? AND step_key IN (SELECT value FROM json_each(?));

-- name: release_step
UPDATE fo_steps SET waiting = waiting - 1 WHERE run_id = ? AND step_key = ?
RETURNING waiting, status, queued, generation;

-- name: close_steps
UPDATE fo_runs SET open_steps = open_steps - ? WHERE run_id = ? RETURNING open_steps;

-- name: set_open_steps
UPDATE fo_runs SET open_steps = ? WHERE run_id = ?;

-- name: set_waiting
UPDATE fo_steps SET waiting = ? WHERE run_id = ? AND step_key = ?;

-- name: insert_dispatch
INSERT OR IGNORE INTO fo_dispatches (run_id, step_key, generation, dispatched_at) VALUES (?, ?, ?, ?);

-- name: queue_step
UPDATE fo_steps SET status = 'Pending', queued = 1, generation = ?, not_before = ?, queued_at = ?
WHERE run_id = ? AND step_key = ?;

-- name: claim_step
UPDATE fo_steps SET status = 'Running', queued = 0, owner = ?, lease_until = ?, attempts = attempts + 1, started_at = ?,
    first_started_at = coalesce(first_started_at, ?)
WHERE run_id = ? AND step_key = ? AND status = 'Pending' AND queued = 1 AND generation = ?
  AND (not_before IS NULL OR not_before <= ?)
  AND EXISTS (SELECT 1 FROM fo_runs r WHERE r.run_id = fo_steps.run_id AND r.status = 'Running')
RETURNING attempts - attempt_base, first_started_at, loop_item, waiting_signal;

-- name: claim_context
SELECT manifest_id, trigger_key, trigger_body, trigger_headers FROM fo_runs WHERE run_id = ?;

-- name: step_output
SELECT status, output, error FROM fo_steps WHERE run_id = ? AND step_key = ?;

-- name: finish_step
UPDATE fo_steps SET status = ?, owner = NULL, lease_until = NULL, output = ?, error = ?, inputs = ?,
    trace = ?, waiting_signal = NULL, finished_at = ?
WHERE run_id = ? AND step_key = ? AND status = 'Running' AND generation = ? AND owner = ?
RETURNING attempts;

-- name: insert_attempt
INSERT INTO fo_attempts (run_id, step_key, attempt, generation, status, owner, started_at, finished_at, error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: set_step_status
UPDATE fo_steps SET status = ?, queued = 0, finished_at = ? WHERE run_id = ? AND step_key = ?;

-- name: reset_step
UPDATE fo_steps SET status = ?, queued = 0, attempt_base = attempts, inputs = NULL, output = NULL, error = NULL, started_at = NULL,
    finished_at = NULL, owner = NULL, lease_until = NULL, not_before = NULL, trace = NULL, first_started_at = NULL,
    waiting_signal = NULL
WHERE run_id = ? AND step_key = ?;

-- name: finish_run
UPDATE fo_runs SET status = ?, finished_at = ? WHERE run_id = ? AND status = 'Running';

-- name: reopen_run
UPDATE fo_runs SET status = 'Running', finished_at = NULL, deadline = ? WHERE run_id = ?;

-- name: expiring_step
SELECT attempts, owner, started_at FROM fo_steps
WHERE run_id = ? AND step_key = ? AND status = 'Running' AND generation = ? AND lease_until < ?;

-- name: owned_step
SELECT attempts, owner, started_at FROM fo_steps
WHERE run_id = ? AND step_key = ? AND status = 'Running' AND generation = ? AND owner = ?;

-- name: expire_step
UPDATE fo_steps SET status = 'Pending', owner = NULL, lease_until = NULL WHERE run_id = ? AND step_key = ?;

-- name: extend_lease
UPDATE fo_steps SET lease_until = ?
WHERE run_id = ? AND step_key = ? AND generation = ? AND owner = ? AND status = 'Running';

-- name: insert_event
INSERT INTO fo_events (run_id, step_key, kind, data, at) VALUES (?, ?, ?, ?, ?);

-- name: get_run
SELECT run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers, idempotency_key,
    created_at, finished_at, deadline
FROM fo_runs WHERE run_id = ?;

-- name: list_runs
-- {where} is "WHERE" and the runs_where_* fragments of the filters given, joined by AND (or nothing):
-- a filter that is not given does not appear, so every filter can use its index.
SELECT run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers, idempotency_key,
    created_at, finished_at, deadline
FROM fo_runs {where}
ORDER BY run_id DESC LIMIT :limit OFFSET :offset;

-- name: count_runs
SELECT count(*) FROM fo_runs {where};

-- name: runs_where_flow_id
flow_id = :flow_id

-- name: runs_where_status
status = :status

-- name: runs_where_since
created_at >= :since

-- name: runs_where_until
created_at < :until

-- name: runs_where_run_id
-- A search for something shaped like a run id looks it up.
run_id = :run_id

-- name: runs_where_search
-- :search is the search text wrapped in % with \ % _ escaped; LIKE ignores ASCII case in SQLite.
(run_id LIKE :search ESCAPE '\' OR flow_id LIKE :search ESCAPE '\' OR trigger_body LIKE :search ESCAPE '\')

-- name: count_runs_by_status
SELECT status, count(*) FROM fo_runs GROUP BY status;

-- name: runs_per_bucket
-- Runs created in each of :n buckets of :width seconds from :since, per status: one index range count
-- (fo_runs_status_created) per bucket and status, empty ones left out.
WITH RECURSIVE b(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM b WHERE i + 1 < :n),
s(status) AS (VALUES ('Running'), ('Succeeded'), ('Failed'), ('Cancelled'), ('TimedOut'))
SELECT i, status, n FROM (
    SELECT b.i AS i, s.status AS status,
        (SELECT count(*) FROM fo_runs r WHERE r.status = s.status
            AND r.created_at >= :since + b.i * :width AND r.created_at < :since + (b.i + 1) * :width) AS n
    FROM b, s)
WHERE n > 0 ORDER BY i, status;

-- name: get_steps
SELECT run_id, step_key, status, generation, queued, attempts, inputs, output, error, started_at, finished_at,
    owner, lease_until, not_before, trace, waiting_signal
FROM fo_steps WHERE run_id = ? ORDER BY seq;

-- name: get_attempts
SELECT run_id, step_key, attempt, generation, status, owner, started_at, finished_at, error
FROM fo_attempts WHERE run_id = ? ORDER BY rowid;

-- name: get_events
SELECT event_id, run_id, step_key, kind, data, at FROM fo_events
WHERE event_id > :after
ORDER BY event_id LIMIT :limit;

-- name: get_run_events
SELECT event_id, run_id, step_key, kind, data, at FROM fo_events
WHERE run_id = :run_id AND event_id > :after
ORDER BY event_id LIMIT :limit;

-- name: last_event_id
SELECT coalesce(max(event_id), 0) FROM fo_events;

-- name: find_expired_leases
SELECT r.flow_id, s.run_id, s.step_key, s.generation
FROM fo_steps s JOIN fo_runs r ON r.run_id = s.run_id
WHERE s.status = 'Running' AND s.lease_until < ?
LIMIT ?;

-- name: find_queued
SELECT r.flow_id, s.run_id, s.step_key, s.generation, s.not_before
FROM fo_steps s JOIN fo_runs r ON r.run_id = s.run_id
WHERE s.queued = 1 AND coalesce(s.not_before, s.queued_at) < ? AND r.status = 'Running'
ORDER BY coalesce(s.not_before, s.queued_at)
LIMIT ?;

-- name: find_idle_runs
SELECT r.flow_id, r.run_id, r.manifest_id FROM fo_runs r
WHERE r.status = 'Running'
  AND NOT EXISTS (SELECT 1 FROM fo_steps s WHERE s.run_id = r.run_id
                  AND (s.queued = 1 OR s.status = 'Running' OR s.waiting_signal IS NOT NULL))
LIMIT ?;

-- name: record_fire
INSERT OR IGNORE INTO fo_cron_fires (flow_id, trigger, fire_time, run_id) VALUES (?, ?, ?, ?);

-- name: fire_run
SELECT run_id FROM fo_cron_fires WHERE flow_id = ? AND trigger = ? AND fire_time = ?;

-- name: insert_signal
INSERT INTO fo_signals (run_id, name, payload, created_at) VALUES (?, ?, ?, ?) RETURNING signal_id;

-- name: unconsumed_signal
SELECT signal_id, payload FROM fo_signals WHERE run_id = ? AND name = ? AND consumed_by IS NULL
ORDER BY signal_id LIMIT 1;

-- name: parked_steps
SELECT step_key, generation FROM fo_steps WHERE run_id = ? AND waiting_signal = ? AND status = 'Pending';

-- name: park_step
UPDATE fo_steps SET waiting_signal = ? WHERE run_id = ? AND step_key = ?;

-- name: consume_signal
UPDATE fo_signals SET consumed_by = ?, consumed_at = ? WHERE signal_id = ?;

-- name: get_signals
SELECT signal_id, run_id, name, payload, created_at, consumed_by FROM fo_signals WHERE run_id = ? ORDER BY signal_id;

-- name: find_overdue_runs
SELECT run_id FROM fo_runs WHERE status = 'Running' AND deadline IS NOT NULL AND deadline < ? LIMIT ?;

-- name: get_schedules
SELECT flow_id, trigger, paused, expression FROM fo_schedules;

-- name: upsert_schedule
INSERT INTO fo_schedules (flow_id, trigger, paused, expression, updated_at) VALUES (:flow_id, :trigger, coalesce(:paused, 0),
    CASE WHEN :clear THEN NULL ELSE :expression END, :now)
ON CONFLICT (flow_id, trigger) DO UPDATE SET
    paused = coalesce(:paused, paused),
    expression = CASE WHEN :clear THEN NULL ELSE coalesce(:expression, expression) END,
    updated_at = :now;

-- name: expand_loop
UPDATE fo_steps SET owner = NULL, lease_until = NULL, inputs = ?, loop_total = ?, loop_started = ?, loop_done = 0
WHERE run_id = ? AND step_key = ? AND status = 'Running' AND generation = ? AND owner = ?;

-- name: max_seq
SELECT coalesce(max(seq), 0) FROM fo_steps WHERE run_id = ?;

-- name: insert_child
INSERT INTO fo_steps (run_id, step_key, seq, status, waiting, loop_item) VALUES (?, ?, ?, 'Pending', ?, ?);

-- name: loop_counters
SELECT loop_started, loop_total FROM fo_steps WHERE run_id = ? AND step_key = ?;

-- name: loop_item_done
UPDATE fo_steps SET loop_done = loop_done + 1,
    loop_started = CASE WHEN loop_started < loop_total THEN loop_started + 1 ELSE loop_started END
WHERE run_id = ? AND step_key = ?
RETURNING loop_started, loop_total, loop_done;

-- name: finish_loop
UPDATE fo_steps SET status = ?, output = ?, error = ?, finished_at = ? WHERE run_id = ? AND step_key = ?
RETURNING attempts, generation, started_at;

-- name: load_outputs
SELECT step_key, status, output, error FROM fo_steps
WHERE run_id = ? AND step_key IN (SELECT value FROM json_each(?));

-- name: delete_children
DELETE FROM fo_steps WHERE run_id = ? AND step_key >= ? AND step_key < ?;

-- name: delete_child_dispatches
DELETE FROM fo_dispatches WHERE run_id = ? AND step_key >= ? AND step_key < ?;

-- name: signal_available
SELECT 1 FROM fo_signals WHERE signal_id = ? AND consumed_by IS NULL;

-- Retention (Store.prune): one batch of finished runs, after the last run id of the previous batch;
-- the other statements take the batch's run ids as a JSON array.

-- name: prune_candidates
SELECT run_id FROM fo_runs
WHERE run_id > ? AND status <> 'Running' AND finished_at < ?
ORDER BY run_id LIMIT ?;

-- name: prune_steps
DELETE FROM fo_steps WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_dispatches
DELETE FROM fo_dispatches WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_attempts
DELETE FROM fo_attempts WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_events
DELETE FROM fo_events WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_signals
DELETE FROM fo_signals WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_cron_fires
DELETE FROM fo_cron_fires WHERE run_id IN (SELECT value FROM json_each(?));

-- name: prune_runs
DELETE FROM fo_runs WHERE run_id IN (SELECT value FROM json_each(?)) AND status <> 'Running';
