-- Getting the agent's work out: per-run workspace snapshots, the email
-- commits are authored with, a session's stored push token, and the pull
-- requests opened for a session.

-- The workspace's exact state before and after a run: commits written into
-- the workspace's own object store and kept there under
-- `refs/repo-runner/runs/<run>/{before,after}` (git/snapshot.rs). Null for
-- a run that never started, or from before this migration.
ALTER TABLE runs ADD COLUMN snapshot_before text;
ALTER TABLE runs ADD COLUMN snapshot_after text;

-- The email of the author of the commits a user makes through the API
-- (`backend admin user email NAME EMAIL`); a documented default when null.
ALTER TABLE users ADD COLUMN email text;

-- A session's own repository token, kept only when it was created with
-- `keep_token`: sealed with a key derived from BACKEND_SECRET_KEY
-- (auth/sealed.rs), opened only for a push or a pull request, and gone
-- with the row.
ALTER TABLE sessions ADD COLUMN token_sealed bytea;

-- The branch the clone checked out (null for a tag or a commit): commits
-- made through the API never go onto it.
ALTER TABLE sessions ADD COLUMN cloned_branch text;

-- Pull (merge) requests opened for a session, newest last.
CREATE TABLE session_pull_requests (
    id bigserial PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    number bigint NOT NULL,
    url text NOT NULL,
    head text NOT NULL,
    base text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_pull_requests_session ON session_pull_requests (session_id, id);
