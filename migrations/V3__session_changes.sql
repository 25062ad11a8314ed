-- Every change of a session row is announced on the `session_changes`
-- channel with the session's id, so the dashboard's list and header follow
-- one stream (GET /api/sessions/events) instead of polling, whatever
-- process made the change.
CREATE FUNCTION notify_session_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('session_changes', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER session_changes
    AFTER INSERT OR UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION notify_session_change();
