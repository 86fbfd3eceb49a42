-- Version 3: the dashboard's time filter (created_at ranges) and runs-over-time chart (a range count
-- per status and bucket), prune's lookup of the cron fire ledger row that points at a run, and the
-- runs search (a trigram index, when the pg_trgm extension can be had: it ships with PostgreSQL and
-- is "trusted" from 13 on, so a database owner may create it; without it, search scans the runs).
CREATE INDEX fo_runs_created ON fo_runs (created_at);
CREATE INDEX fo_runs_status_created ON fo_runs (status, created_at);
CREATE INDEX fo_cron_fires_run ON fo_cron_fires (run_id);
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
