-- Course completion (contract section 4, issue 5): the check, its effects
-- and its one course.completed event, in the caller's transaction.
--
-- A course is completed by a user when every ready video of it is
-- completed (video_progress.completed_at set) and every quiz of it has a
-- graded submission of the user with passed = true.  For each new
-- completion among the given (user, course) pairs:
--   - the ledger row in course_completions (migration 0010), once: ON
--     CONFLICT DO NOTHING, so a replay records nothing and emits nothing;
--   - the enrollment marked completed (status, completed_at, 100 %);
--   - course_analytics_summary.completion_count incremented, exactly once
--     with the ledger row (an analytics consumer of the event must not
--     count it again);
--   - the course.completed event in event_outbox (migration 0011), keyed
--     by user, with the eventId derived from (user, course) and occurredAt
--     = completedAt, so the event is the same bytes however often the
--     relay (elearn-outbox) publishes it.
-- Returns the pairs newly recorded.  elearn-progress calls it after a
-- batch completed videos; a quiz grader calls it after a pass (a course
-- whose last step is a quiz completes then).

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
        RETURNING c.user_id, c.course_id, c.event_id,
                  c.completed_at,
                  to_char(c.completed_at AT TIME ZONE 'UTC',
                          'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at_text
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
    ), events AS (
        INSERT INTO event_outbox (topic, key, payload)
        SELECT 'elearn.course-completions', i.user_id::text,
               json_build_object(
                   'eventId', i.event_id,
                   'type', 'course.completed',
                   'occurredAt', i.at_text,
                   'schemaVersion', 1,
                   'data', json_build_object(
                       'userId', i.user_id,
                       'courseId', i.course_id,
                       'completedAt', i.at_text))::text
          FROM ins i
         ORDER BY i.user_id, i.course_id
        RETURNING outbox_id
    )
    SELECT i.user_id, i.course_id, i.completed_at FROM ins i;
END;
COMMENT ON FUNCTION elearn_record_course_completions(bigint[], bigint[]) IS
    'records new course completions (ledger, enrollment, analytics count, '
    'course.completed in event_outbox) among the given (user, course) '
    'pairs; returns those newly recorded';
