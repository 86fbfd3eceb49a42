-- Version 2: the dashboard's runs list filtered by flow and status, newest first
-- (list_runs with both filters: WHERE flow_id = ? AND status = ? ORDER BY run_id DESC).
CREATE INDEX fo_runs_flow_status ON fo_runs (flow_id, status, run_id);
