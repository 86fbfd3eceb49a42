-- Version 3: the dashboard's time filter (created_at ranges) and runs-over-time chart (a range count
-- per status and bucket), and prune's lookup of the cron fire ledger row that points at a run.
CREATE INDEX fo_runs_created ON fo_runs (created_at);
CREATE INDEX fo_runs_status_created ON fo_runs (status, created_at);
CREATE INDEX fo_cron_fires_run ON fo_cron_fires (run_id);
