-- What the elearn-progress daemon needs (workers/progress, issue 5).
--
-- video_progress.reported_at_ms: the client time (reportedAtMs, ms since
-- the epoch) of the report whose position the row holds.  The daemon's
-- batch upsert moves position_seconds only for a strictly newer report, so
-- a late or replayed event never moves a newer row backwards; the watched
-- union needs no such guard (a union is idempotent).  A plain integer: the
-- comparison must be exact, and it is never indexed (the upsert stays HOT).
--
-- course_completions: the ledger that makes "one course.completed event per
-- (user, course)" hold under replays and crashes.  The row is inserted (ON
-- CONFLICT DO NOTHING) in the transaction that completed the course, with
-- the event in event_outbox (migration 0012, elearn-outbox relays it), so a
-- replayed batch finds the row and emits nothing.  event_id is derived from
-- (user, course) alone, so even a relayed-twice event is the same event
-- (consumers deduplicate on eventId).

ALTER TABLE video_progress
    ADD COLUMN reported_at_ms bigint NOT NULL DEFAULT 0
    CHECK (reported_at_ms >= 0);
COMMENT ON COLUMN video_progress.reported_at_ms IS
    'reportedAtMs of the report position_seconds comes from (ms since epoch)';

CREATE TABLE course_completions (
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    course_id    bigint NOT NULL REFERENCES courses ON DELETE CASCADE,
    event_id     uuid NOT NULL UNIQUE,
    completed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, course_id)
);
CREATE INDEX course_completions_course_idx
    ON course_completions (course_id, user_id);

-- The eventId of (user, course)'s course.completed event: the first 128
-- bits of SHA-256 over a fixed name, shaped as an RFC 9562 version 8
-- (custom) UUID.  Deterministic: one completion, one eventId, however
-- often it is published.
CREATE FUNCTION elearn_completion_event_id(p_user bigint, p_course bigint)
RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN overlay(overlay(
           substr(encode(sha256(convert_to(
               'elearn:course.completed:' || p_user || ':' || p_course,
               'UTF8')), 'hex'), 1, 32)
           PLACING '8' FROM 13) PLACING '8' FROM 17)::uuid;
