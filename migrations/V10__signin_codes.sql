-- One-time sign-in codes, for the links `backend admin signin-link` prints:
-- 256 random bits, kept as their SHA-256, usable once and only until they
-- expire (minutes). A browser that trades one gets a sign-in resting on a
-- token made for it (`api_tokens.label`), so revoking that token signs the
-- browser out as any other.
CREATE TABLE signin_codes (
    id          uuid PRIMARY KEY,
    code_sha256 bytea       NOT NULL UNIQUE,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

-- What a token is for, when it was not made by `backend admin token create`.
ALTER TABLE api_tokens ADD COLUMN label text;
