-- Sessions: a clone of a repository bound to one Codex thread.
CREATE TABLE sessions (
    id               uuid PRIMARY KEY,
    -- The remote as given, with any credentials removed.
    repo_url         text        NOT NULL,
    git_ref          text,
    depth            integer,
    status           text        NOT NULL CHECK (status IN ('cloning', 'ready', 'failed')),
    error            text,
    -- {received_objects, total_objects, indexed_deltas, total_deltas, received_bytes}
    clone_progress   jsonb,
    -- The commit checked out by the clone: the base of the session's diff.
    base_commit      text,
    runner_thread_id text,
    codex_thread_id  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_created_at ON sessions (created_at DESC, id DESC);

-- Runs: one prompt of a session, executed in `position` order.
CREATE TABLE runs (
    id             uuid PRIMARY KEY,
    session_id     uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    position       bigint      NOT NULL,
    prompt         text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    runner_run_id  text,
    final_response text,
    usage          jsonb,
    error          text,
    -- Git status of the workspace before the run: {path: fingerprint}.
    status_before  jsonb,
    -- {created: [...], modified: [...], deleted: [...]}
    files          jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    UNIQUE (session_id, position)
);
CREATE INDEX runs_active ON runs (session_id, position) WHERE status IN ('queued', 'running');

-- Every event of every run, numbered from 1 without gaps.
CREATE TABLE run_events (
    run_id     uuid        NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,
    event_type text        NOT NULL,
    -- The event's JSON exactly as streamed (serialised once, replayed as is).
    data       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
