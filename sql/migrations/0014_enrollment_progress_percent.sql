-- progressPercent of an enrollment (contract section 3, GET
-- /me/enrollments and /courses/{id}/enrollments) followed only the
-- completion: 0 until the course was completed, then 100.  It now counts
-- the course's steps: the share, in whole percent rounded down, of its
-- ready videos the user completed and its quizzes the user passed,
-- 100 only once the course is completed (a course whose steps are all
-- done but whose completion is not recorded yet shows 99).
--
-- elearn_record_course_completions() (migration 0012) is the one place
-- that runs when a step is done (elearn-progress after a batch completed
-- videos, a grader after a pass), so it sets the percentage too, for the
-- given pairs that do not complete; the rest of it is unchanged.

CREATE OR REPLACE FUNCTION elearn_record_course_completions(p_users bigint[],
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
    ), steps AS (
        -- the course's steps done, for the pairs not completed above
        SELECT p.user_id, p.course_id,
               (SELECT count(*) FROM videos v
                 WHERE v.course_id = p.course_id AND v.status = 'ready')
               + (SELECT count(*) FROM quizzes q
                   WHERE q.course_id = p.course_id) AS total,
               (SELECT count(*) FROM videos v
                  JOIN video_progress vp ON vp.video_id = v.video_id
                 WHERE v.course_id = p.course_id AND v.status = 'ready'
                   AND vp.user_id = p.user_id
                   AND vp.completed_at IS NOT NULL)
               + (SELECT count(*) FROM quizzes q
                   WHERE q.course_id = p.course_id
                     AND EXISTS (
                         SELECT 1 FROM quiz_submissions s
                          WHERE s.user_id = p.user_id
                            AND s.quiz_id = q.quiz_id
                            AND s.status = 'graded' AND s.passed))
                 AS done
          FROM pairs p
         WHERE NOT EXISTS (SELECT 1 FROM done d
                            WHERE d.user_id = p.user_id
                              AND d.course_id = p.course_id)
    ), pct AS (
        -- below 100 until the course is completed (enr sets 100)
        UPDATE enrollments e
           SET progress_percent = least(s.done * 100 / s.total, 99)
          FROM steps s
         WHERE e.user_id = s.user_id AND e.course_id = s.course_id
           AND e.completed_at IS NULL AND s.total > 0
           AND e.progress_percent <> least(s.done * 100 / s.total, 99)
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
    'pairs and the progress_percent of the others; returns the pairs '
    'newly recorded';
