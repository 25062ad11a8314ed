-- A session change says whose session it is, and each session row counts
-- its changes, so that a backend reads a changed session once for all the
-- streams it serves and gives it to those whose caller may see it, without
-- a query per stream (`session_changes.rs`).

-- Raised by every update, under the row's lock (a trigger of an UPDATE
-- fires once the row is locked), so it grows in the order the changes
-- commit: a stream that read a newer state of a session (its snapshot)
-- skips an older one it is told of after.
ALTER TABLE sessions ADD COLUMN version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION count_session_change() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER session_version
    BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION count_session_change();

-- The payload was the session's id alone; it is now JSON:
-- `{"id": …, "owner": … or null, "deleted": true|false}`. The owner of a
-- deleted session is known only here, from the row that went.
CREATE OR REPLACE FUNCTION notify_session_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('session_changes', json_build_object(
            'id', OLD.id, 'owner', OLD.owner_id, 'deleted', true)::text);
    ELSE
        PERFORM pg_notify('session_changes', json_build_object(
            'id', NEW.id, 'owner', NEW.owner_id, 'deleted', false)::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
