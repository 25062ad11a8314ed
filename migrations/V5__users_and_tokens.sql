-- Users, their API tokens and their browsers' signed-in sessions; every
-- session (and with it its runs, events, files and diff) has an owner.

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    is_admin   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- An API token is 256 random bits shown once; only its SHA-256 is kept.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_sha256 bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- A browser signed in with a token: the `rr_session` cookie, kept as a
-- SHA-256 too. It dies with its token: revoking a token signs out every
-- browser that signed in with it.
CREATE TABLE browser_sessions (
    id             uuid PRIMARY KEY,
    cookie_sha256  bytea       NOT NULL UNIQUE,
    token_id       uuid        NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);

-- NULL: created while AUTH_MODE=none (or before users existed); only an
-- admin sees such a session once tokens are required.
ALTER TABLE sessions ADD COLUMN owner_id uuid REFERENCES users (id);
CREATE INDEX sessions_owner ON sessions (owner_id, created_at DESC, id DESC);

-- A revoked token or a signed-out browser is announced on the
-- `credentials_revoked` channel with its id, so every backend ends the
-- streams it opened at once, whichever process revoked it (`backend admin`
-- included).
CREATE FUNCTION notify_credential_revoked() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('credentials_revoked', OLD.id::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_token_revoked
    AFTER UPDATE OF revoked_at ON api_tokens
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION notify_credential_revoked();

CREATE TRIGGER browser_signed_out
    AFTER DELETE ON browser_sessions
    FOR EACH ROW EXECUTE FUNCTION notify_credential_revoked();
