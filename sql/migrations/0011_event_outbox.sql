-- The transactional outbox (design review finding 9's "events that cannot
-- be lost"): a statement that changes state and must announce it inserts
-- the event here in the same transaction, so the change and its event
-- commit together or not at all.  elearn-outbox (workers/outbox) publishes
-- the rows to Kafka in outbox_id order and deletes each once the broker
-- acknowledged it; a crash in between publishes a row twice, which the
-- consumers absorb by eventId (processed_events).  An empty table is the
-- normal state.

CREATE TABLE event_outbox (
    outbox_id  bigserial PRIMARY KEY,
    topic      text NOT NULL CHECK (topic ~ '^elearn\.[a-z.-]+$'),
    key        text NOT NULL,
    payload    text NOT NULL,            -- the event envelope, JSON
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The contract's envelope (section 8) around data, with a fresh eventId.
CREATE FUNCTION elearn_event(type text, data json)
RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE
RETURN json_build_object(
           'eventId', gen_random_uuid(),
           'type', type,
           'occurredAt', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'schemaVersion', 1,
           'data', data)::text;

-- Wakes the relay at commit (NOTIFY is transactional); it also polls.
CREATE FUNCTION elearn_outbox_notify()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('elearn_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER event_outbox_notify
    AFTER INSERT ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION elearn_outbox_notify();
