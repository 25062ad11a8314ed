-- Workspace lifecycle: a session whose workspace the sweeper removed (idle
-- past BACKEND_SESSION_IDLE_TTL_HOURS, or the longest idle when the
-- workspaces outgrow BACKEND_WORKSPACES_MAX_BYTES) is `expired`: its row,
-- runs and events stay, its files are gone.

ALTER TABLE sessions DROP CONSTRAINT sessions_status_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_status_check
    CHECK (status IN ('cloning', 'ready', 'failed', 'expired'));

-- Bytes the session's folder held when last measured (after its clone and
-- after each run); NULL until measured.
ALTER TABLE sessions ADD COLUMN workspace_bytes bigint;
-- The last time the session was created, prompted or ran.
ALTER TABLE sessions ADD COLUMN last_active_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE sessions ADD COLUMN expired_at timestamptz;

CREATE INDEX sessions_idle ON sessions (last_active_at) WHERE status IN ('ready', 'failed');
CREATE INDEX sessions_owner_bytes ON sessions (owner_id) WHERE status <> 'expired';
