-- Preview grants: the credential of the dashboard's Preview tab. The
-- signed-in dashboard asks for one per session (`POST
-- /api/sessions/{id}/preview`) and the preview listener's addresses carry it;
-- it reads that one session's files and tree, nothing else. 256 random bits,
-- kept as their SHA-256 (a lookup by hash, as for tokens). It dies when it
-- expires (BACKEND_PREVIEW_GRANT_TTL_SECS), when its session is deleted,
-- when the token it was asked with is revoked, and when the browser that
-- asked for it signs out or its sign-in expires.
CREATE TABLE preview_grants (
    id                 uuid        PRIMARY KEY,
    grant_sha256       bytea       NOT NULL UNIQUE,
    session_id         uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- Who asked: their token, and their browser's sign-in when they asked
    -- with the cookie. Both NULL with AUTH_MODE=none.
    token_id           uuid        REFERENCES api_tokens (id) ON DELETE CASCADE,
    browser_session_id uuid        REFERENCES browser_sessions (id) ON DELETE CASCADE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL
);
CREATE INDEX preview_grants_expiry ON preview_grants (expires_at);
CREATE INDEX preview_grants_session ON preview_grants (session_id);
CREATE INDEX preview_grants_token ON preview_grants (token_id);
CREATE INDEX preview_grants_browser ON preview_grants (browser_session_id);
