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
-- CONFLICT DO NOTHING) in the transaction that completed the course, so a
-- replayed batch finds it and inserts nothing; it is also the outbox:
-- published_at stays NULL until the broker acknowledged the event, and the
-- daemon republishes unpublished rows at start and periodically.  event_id
-- is derived from (user, course) alone, so a republished event is the same
-- event (consumers deduplicate on eventId).

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
    published_at timestamptz,
    PRIMARY KEY (user_id, course_id)
);
-- the outbox sweep: only the few rows not yet published
CREATE INDEX course_completions_unpublished_idx
    ON course_completions (completed_at, user_id, course_id)
    WHERE published_at IS NULL;
CREATE INDEX course_completions_course_idx
    ON course_completions (course_id, user_id);

-- The eventId of (user, course)'s course.completed event: the first 128
-- bits of SHA-256 over a fixed name, shaped as an RFC 9562 version 8
-- (custom) UUID.  Deterministic, so every publication of one completion
-- carries the same eventId.
CREATE FUNCTION elearn_completion_event_id(p_user bigint, p_course bigint)
RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN overlay(overlay(
           substr(encode(sha256(convert_to(
               'elearn:course.completed:' || p_user || ':' || p_course,
               'UTF8')), 'hex'), 1, 32)
           PLACING '8' FROM 13) PLACING '8' FROM 17)::uuid;

-- Records the completions among the given (user, course) pairs: a course
-- is completed by a user when every ready video of it is completed
-- (video_progress.completed_at set) and every quiz of it has a graded
-- submission of the user with passed = true.  For each new completion, in
-- the caller's transaction: the ledger row (once: ON CONFLICT DO NOTHING),
-- the enrollment marked completed, and course_analytics_summary's
-- completion_count incremented (exactly once, with the ledger row).
-- Returns the pairs newly recorded.  The progress daemon calls it after a
-- batch completed videos; a quiz grader calls it after a pass (a course
-- whose last step is a quiz completes then), and the daemon's outbox sweep
-- publishes the event either way.
CREATE FUNCTION elearn_record_course_completions(p_users bigint[],
                                                 p_courses bigint[])
RETURNS TABLE (user_id bigint, course_id bigint, completed_at timestamptz)
LANGUAGE sql
SET search_path = public, pg_catalog
BEGIN ATOMIC
    WITH pairs AS (
        SELECT DISTINCT p.user_id, p.course_id
          FROM unnest(p_users, p_courses) AS p (user_id, course_id)
    ), done AS (
        SELECT p.user_id, p.course_id
          FROM pairs p
         WHERE EXISTS (SELECT 1 FROM videos v
                        WHERE v.course_id = p.course_id
                          AND v.status = 'ready')
           AND NOT EXISTS (
               SELECT 1 FROM videos v
                WHERE v.course_id = p.course_id AND v.status = 'ready'
                  AND NOT EXISTS (
                      SELECT 1 FROM video_progress vp
                       WHERE vp.user_id = p.user_id
                         AND vp.video_id = v.video_id
                         AND vp.completed_at IS NOT NULL))
           AND NOT EXISTS (
               SELECT 1 FROM quizzes q
                WHERE q.course_id = p.course_id
                  AND NOT EXISTS (
                      SELECT 1 FROM quiz_submissions s
                       WHERE s.user_id = p.user_id
                         AND s.quiz_id = q.quiz_id
                         AND s.status = 'graded' AND s.passed))
    ), ins AS (
        INSERT INTO course_completions AS c
               (user_id, course_id, event_id, completed_at)
        SELECT d.user_id, d.course_id,
               elearn_completion_event_id(d.user_id, d.course_id), now()
          FROM done d
         ORDER BY d.user_id, d.course_id
        ON CONFLICT DO NOTHING
        RETURNING c.user_id, c.course_id, c.completed_at
    ), enr AS (
        UPDATE enrollments e
           SET status = 'completed', completed_at = i.completed_at,
               progress_percent = 100
          FROM ins i
         WHERE e.user_id = i.user_id AND e.course_id = i.course_id
           AND e.completed_at IS NULL
        RETURNING e.user_id
    ), summary AS (
        INSERT INTO course_analytics_summary AS s
               (course_id, completion_count)
        SELECT i.course_id, count(*) FROM ins i
         GROUP BY i.course_id
         ORDER BY i.course_id
        ON CONFLICT (course_id) DO UPDATE
           SET completion_count = s.completion_count
                                  + EXCLUDED.completion_count,
               updated_at = now()
        RETURNING s.course_id
    )
    SELECT i.user_id, i.course_id, i.completed_at FROM ins i;
END;
COMMENT ON FUNCTION elearn_record_course_completions(bigint[], bigint[]) IS
    'records new course completions (ledger, enrollment, analytics count) '
    'among the given (user, course) pairs; returns those newly recorded';
