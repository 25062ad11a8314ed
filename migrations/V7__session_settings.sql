-- What a session's agent runs with, chosen at creation: model, reasoning
-- effort, sandbox and approval policy (each absent for the runner's own).
ALTER TABLE sessions ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'::jsonb;
