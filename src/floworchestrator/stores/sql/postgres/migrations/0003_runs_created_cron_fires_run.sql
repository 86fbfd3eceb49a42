-- Version 3: the dashboard's runs-over-time chart and time filter (created_at ranges), and prune's
-- lookup of the cron fire ledger row that points at a run (DELETE ... WHERE run_id = ...).
CREATE INDEX fo_runs_created ON fo_runs (created_at);
CREATE INDEX fo_cron_fires_run ON fo_cron_fires (run_id);
