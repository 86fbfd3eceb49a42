-- Named queries for PostgreSQL. Parameters are always bound, never interpolated.
-- Batches run in pipeline mode: a statement whose result is not read costs no round trip, so every
-- conditional write says whether it matched with RETURNING (read at once) rather than a row count.

-- name: get_schema_version
SELECT version FROM fo_schema_version;

-- name: set_schema_version
UPDATE fo_schema_version SET version = %s;

-- name: insert_schema_version
INSERT INTO fo_schema_version (version) VALUES (%s);

-- name: upsert_manifest
INSERT INTO fo_manifests (manifest_id, flow_id, manifest) VALUES (%s, %s, %s)
ON CONFLICT (manifest_id) DO NOTHING;

-- name: upsert_flow
INSERT INTO fo_flows (flow_id, version, manifest_id, enabled, updated_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (flow_id) DO UPDATE SET version = excluded.version, manifest_id = excluded.manifest_id,
    updated_at = excluded.updated_at;

-- name: list_flows
SELECT f.flow_id, f.version, f.manifest_id, m.manifest, f.enabled, f.updated_at
FROM fo_flows f JOIN fo_manifests m ON m.manifest_id = f.manifest_id
ORDER BY f.flow_id;

-- name: set_flow_enabled
UPDATE fo_flows SET enabled = %s, updated_at = %s WHERE flow_id = %s;

-- name: flow_enabled
SELECT enabled FROM fo_flows WHERE flow_id = %s;

-- name: get_manifest
SELECT manifest FROM fo_manifests WHERE manifest_id = %s;

-- name: find_run_by_key
SELECT run_id FROM fo_runs WHERE flow_id = %s AND idempotency_key = %s;

-- name: insert_run
INSERT INTO fo_runs (run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers,
    idempotency_key, open_steps, created_at, finished_at, deadline)
VALUES (%s, %s, 'Running', %s, %s, %s, %s, %s, %s, %s, NULL, %s);

-- name: insert_step
INSERT INTO fo_steps (run_id, step_key, seq, status, waiting) VALUES (%s, %s, %s, 'Pending', %s);

-- name: run_status
SELECT status FROM fo_runs WHERE run_id = %s;

-- name: load_steps
SELECT step_key, status, generation, queued, waiting_signal IS NOT NULL FROM fo_steps WHERE run_id = %s;

-- name: run_flow
SELECT flow_id FROM fo_runs WHERE run_id = %s;

-- name: load_statuses
SELECT step_key, status FROM fo_steps WHERE run_id = %s AND step_key = ANY(%s);

-- name: release_step
-- Every successor of the finished steps at once: one decrement per occurrence of its key.
UPDATE fo_steps s SET waiting = s.waiting - r.n
FROM (SELECT k, count(*)::integer AS n FROM unnest(%s::text[]) AS k GROUP BY k) r
WHERE s.run_id = %s AND s.step_key = r.k
RETURNING s.step_key, s.waiting, s.status, s.queued, s.generation;

-- name: close_steps
UPDATE fo_runs SET open_steps = open_steps - %s WHERE run_id = %s RETURNING open_steps;

-- name: set_open_steps
UPDATE fo_runs SET open_steps = %s WHERE run_id = %s;

-- name: set_waiting
UPDATE fo_steps SET waiting = %s WHERE run_id = %s AND step_key = %s;

-- name: insert_dispatch
INSERT INTO fo_dispatches (run_id, step_key, generation, dispatched_at) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING
RETURNING generation;

-- name: queue_step
UPDATE fo_steps SET status = 'Pending', queued = true, generation = %s, not_before = %s, queued_at = %s
WHERE run_id = %s AND step_key = %s;

-- name: claim_step
UPDATE fo_steps SET status = 'Running', queued = false, owner = %s, lease_until = %s, attempts = attempts + 1, started_at = %s,
    first_started_at = coalesce(first_started_at, %s)
WHERE run_id = %s AND step_key = %s AND status = 'Pending' AND queued AND generation = %s
  AND (not_before IS NULL OR not_before <= %s)
  AND EXISTS (SELECT 1 FROM fo_runs r WHERE r.run_id = fo_steps.run_id AND r.status = 'Running')
RETURNING attempts - attempt_base, first_started_at, loop_item, waiting_signal;

-- name: claim_context
SELECT manifest_id, trigger_key, trigger_body, trigger_headers FROM fo_runs WHERE run_id = %s;

-- name: step_output
SELECT status, output, error FROM fo_steps WHERE run_id = %s AND step_key = %s;

-- name: finish_step
UPDATE fo_steps SET status = %s, owner = NULL, lease_until = NULL, output = %s, error = %s, inputs = %s,
    trace = %s, waiting_signal = NULL, finished_at = %s
WHERE run_id = %s AND step_key = %s AND status = 'Running' AND generation = %s AND owner = %s
RETURNING attempts;

-- name: insert_attempt
-- Many at once (a batch keeps them until it commits), one array per column, inserted in array order.
INSERT INTO fo_attempts (run_id, step_key, attempt, generation, status, owner, started_at, finished_at, error)
SELECT r, k, a, g, st, o, s, f, e FROM unnest(%s::text[], %s::text[], %s::integer[], %s::integer[], %s::text[], %s::text[],
    %s::double precision[], %s::double precision[], %s::text[]) WITH ORDINALITY AS t(r, k, a, g, st, o, s, f, e, i) ORDER BY i;

-- name: set_step_status
UPDATE fo_steps SET status = %s, queued = false, finished_at = %s WHERE run_id = %s AND step_key = %s;

-- name: reset_step
UPDATE fo_steps SET status = %s, queued = false, attempt_base = attempts, inputs = NULL, output = NULL, error = NULL, started_at = NULL,
    finished_at = NULL, owner = NULL, lease_until = NULL, not_before = NULL, trace = NULL, first_started_at = NULL,
    waiting_signal = NULL
WHERE run_id = %s AND step_key = %s;

-- name: finish_run
UPDATE fo_runs SET status = %s, finished_at = %s WHERE run_id = %s AND status = 'Running'
RETURNING run_id;

-- name: reopen_run
UPDATE fo_runs SET status = 'Running', finished_at = NULL, deadline = %s WHERE run_id = %s;

-- name: expiring_step
SELECT attempts, owner, started_at FROM fo_steps
WHERE run_id = %s AND step_key = %s AND status = 'Running' AND generation = %s AND lease_until < %s;

-- name: owned_step
SELECT attempts, owner, started_at FROM fo_steps
WHERE run_id = %s AND step_key = %s AND status = 'Running' AND generation = %s AND owner = %s;

-- name: expire_step
UPDATE fo_steps SET status = 'Pending', owner = NULL, lease_until = NULL WHERE run_id = %s AND step_key = %s;

-- name: extend_lease
UPDATE fo_steps SET lease_until = %s
WHERE run_id = %s AND step_key = %s AND generation = %s AND owner = %s AND status = 'Running';

-- name: insert_event
-- Many at once (a batch keeps them until it commits), one array per column, inserted in array order.
INSERT INTO fo_events (run_id, step_key, kind, data, at)
SELECT r, k, kind, d, at FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::double precision[])
    WITH ORDINALITY AS t(r, k, kind, d, at, i) ORDER BY i;

-- name: get_run
SELECT run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers, idempotency_key,
    created_at, finished_at, deadline
FROM fo_runs WHERE run_id = %s;

-- name: list_runs
-- {where} is "WHERE" and the runs_where_* fragments of the filters given, joined by AND (or nothing):
-- a filter that is not given does not appear, so every filter can use its index, whatever the plan cache.
SELECT run_id, flow_id, status, manifest_id, trigger_key, trigger_body, trigger_headers, idempotency_key,
    created_at, finished_at, deadline
FROM fo_runs {where}
ORDER BY run_id DESC LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_runs
SELECT count(*) FROM fo_runs {where};

-- name: runs_where_flow_id
flow_id = %(flow_id)s

-- name: runs_where_status
status = %(status)s

-- name: runs_where_since
created_at >= %(since)s

-- name: runs_where_until
created_at < %(until)s

-- name: runs_where_run_id
-- A search for something shaped like a run id looks it up.
run_id = %(run_id)s

-- name: runs_where_search
-- %(search)s is the search text wrapped in % with \ % _ escaped (\ is ILIKE's default escape). The
-- expression is the one of the fo_runs_search trigram index (migration 0003), when pg_trgm is there.
(run_id || ' ' || flow_id || ' ' || trigger_body) ILIKE %(search)s

-- name: count_runs_by_status
SELECT status, count(*) FROM fo_runs GROUP BY status;

-- name: runs_per_bucket
-- Runs created in each of %(n)s buckets of %(width)s seconds from %(since)s, per status: one index range
-- count (fo_runs_status_created) per bucket and status, empty ones left out.
SELECT b.i, s.status, c.n
FROM generate_series(0, %(n)s - 1) AS b(i)
CROSS JOIN unnest(ARRAY['Running', 'Succeeded', 'Failed', 'Cancelled', 'TimedOut']) AS s(status)
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM fo_runs r
    WHERE r.status = s.status
      AND r.created_at >= %(since)s + b.i * %(width)s AND r.created_at < %(since)s + (b.i + 1) * %(width)s
) c
WHERE c.n > 0 ORDER BY b.i, s.status;

-- name: get_steps
SELECT run_id, step_key, status, generation, queued, attempts, inputs, output, error, started_at, finished_at,
    owner, lease_until, not_before, trace, waiting_signal
FROM fo_steps WHERE run_id = %s ORDER BY seq;

-- name: get_attempts
SELECT run_id, step_key, attempt, generation, status, owner, started_at, finished_at, error
FROM fo_attempts WHERE run_id = %s ORDER BY attempt_id;

-- name: get_events
SELECT event_id, run_id, step_key, kind, data, at FROM fo_events
WHERE event_id > %(after)s
ORDER BY event_id LIMIT %(limit)s;

-- name: get_run_events
SELECT event_id, run_id, step_key, kind, data, at FROM fo_events
WHERE run_id = %(run_id)s AND event_id > %(after)s
ORDER BY event_id LIMIT %(limit)s;

-- name: last_event_id
SELECT coalesce(max(event_id), 0) FROM fo_events;

-- name: find_expired_leases
SELECT r.flow_id, s.run_id, s.step_key, s.generation
FROM fo_steps s JOIN fo_runs r ON r.run_id = s.run_id
WHERE s.status = 'Running' AND s.lease_until < %s
LIMIT %s;

-- name: find_queued
SELECT r.flow_id, s.run_id, s.step_key, s.generation, s.not_before
FROM fo_steps s JOIN fo_runs r ON r.run_id = s.run_id
WHERE s.queued AND coalesce(s.not_before, s.queued_at) < %s AND r.status = 'Running'
ORDER BY coalesce(s.not_before, s.queued_at)
LIMIT %s;

-- name: find_idle_runs
SELECT r.flow_id, r.run_id, r.manifest_id FROM fo_runs r
WHERE r.status = 'Running'
  AND NOT EXISTS (SELECT 1 FROM fo_steps s WHERE s.run_id = r.run_id
                  AND (s.queued OR s.status = 'Running' OR s.waiting_signal IS NOT NULL))
LIMIT %s;

-- name: record_fire
INSERT INTO fo_cron_fires (flow_id, trigger, fire_time, run_id) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING
RETURNING run_id;

-- name: fire_run
SELECT run_id FROM fo_cron_fires WHERE flow_id = %s AND trigger = %s AND fire_time = %s;

-- name: insert_signal
INSERT INTO fo_signals (run_id, name, payload, created_at) VALUES (%s, %s, %s, %s) RETURNING signal_id;

-- name: unconsumed_signal
SELECT signal_id, payload FROM fo_signals WHERE run_id = %s AND name = %s AND consumed_by IS NULL
ORDER BY signal_id LIMIT 1;

-- name: parked_steps
SELECT step_key, generation FROM fo_steps WHERE run_id = %s AND waiting_signal = %s AND status = 'Pending';

-- name: park_step
UPDATE fo_steps SET waiting_signal = %s WHERE run_id = %s AND step_key = %s;

-- name: consume_signal
UPDATE fo_signals SET consumed_by = %s, consumed_at = %s WHERE signal_id = %s;

-- name: get_signals
SELECT signal_id, run_id, name, payload, created_at, consumed_by FROM fo_signals WHERE run_id = %s ORDER BY signal_id;

-- name: find_overdue_runs
SELECT run_id FROM fo_runs WHERE status = 'Running' AND deadline IS NOT NULL AND deadline < %s LIMIT %s;

-- name: get_schedules
SELECT flow_id, trigger, paused, expression FROM fo_schedules;

-- name: upsert_schedule
INSERT INTO fo_schedules (flow_id, trigger, paused, expression, updated_at) VALUES (%(flow_id)s, %(trigger)s, coalesce(%(paused)s::boolean, false),
    CASE WHEN %(clear)s::boolean THEN NULL ELSE %(expression)s::text END, %(now)s)
ON CONFLICT (flow_id, trigger) DO UPDATE SET
    paused = coalesce(%(paused)s::boolean, fo_schedules.paused),
    expression = CASE WHEN %(clear)s::boolean THEN NULL ELSE coalesce(%(expression)s::text, fo_schedules.expression) END,
    updated_at = %(now)s;

-- name: expand_loop
UPDATE fo_steps SET owner = NULL, lease_until = NULL, inputs = %s, loop_total = %s, loop_started = %s, loop_done = 0
WHERE run_id = %s AND step_key = %s AND status = 'Running' AND generation = %s AND owner = %s
RETURNING step_key;

-- name: max_seq
SELECT coalesce(max(seq), 0) FROM fo_steps WHERE run_id = %s;

-- name: insert_child
INSERT INTO fo_steps (run_id, step_key, seq, status, waiting, loop_item) VALUES (%s, %s, %s, 'Pending', %s, %s);

-- name: loop_counters
SELECT loop_started, loop_total FROM fo_steps WHERE run_id = %s AND step_key = %s;

-- name: loop_item_done
UPDATE fo_steps SET loop_done = loop_done + 1,
    loop_started = CASE WHEN loop_started < loop_total THEN loop_started + 1 ELSE loop_started END
WHERE run_id = %s AND step_key = %s
RETURNING loop_started, loop_total, loop_done;

-- name: finish_loop
UPDATE fo_steps SET status = %s, output = %s, error = %s, finished_at = %s WHERE run_id = %s AND step_key = %s
RETURNING attempts, generation, started_at;

-- name: load_outputs
SELECT step_key, status, output, error FROM fo_steps
WHERE run_id = %s AND step_key = ANY(%s);

-- name: delete_children
DELETE FROM fo_steps WHERE run_id = %s AND step_key >= %s AND step_key < %s;

-- name: delete_child_dispatches
DELETE FROM fo_dispatches WHERE run_id = %s AND step_key >= %s AND step_key < %s;

-- name: signal_available
SELECT 1 FROM fo_signals WHERE signal_id = %s AND consumed_by IS NULL;

-- Retention (Store.prune): one batch of finished runs, after the last run id of the previous batch,
-- locked so a concurrent batch of the engine about one of them (which locks its run first) waits,
-- and runs such a batch holds already are left for the next prune; the other statements take the
-- batch's run ids as an array.

-- name: prune_candidates
SELECT run_id FROM fo_runs
WHERE run_id > %s AND status <> 'Running' AND finished_at < %s
ORDER BY run_id LIMIT %s
FOR UPDATE SKIP LOCKED;

-- name: prune_steps
DELETE FROM fo_steps WHERE run_id = ANY(%s);

-- name: prune_dispatches
DELETE FROM fo_dispatches WHERE run_id = ANY(%s);

-- name: prune_attempts
DELETE FROM fo_attempts WHERE run_id = ANY(%s);

-- name: prune_events
DELETE FROM fo_events WHERE run_id = ANY(%s);

-- name: prune_signals
DELETE FROM fo_signals WHERE run_id = ANY(%s);

-- name: prune_cron_fires
DELETE FROM fo_cron_fires WHERE run_id = ANY(%s);

-- name: prune_runs
DELETE FROM fo_runs WHERE run_id = ANY(%s) AND status <> 'Running';
