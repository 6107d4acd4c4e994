-- elearn's hot SQL, one statement per name.  The module and the daemons send
-- these with PQsendQueryParams (never built from strings) and
-- tests/integration/test_schema.py EXPLAINs every one of them against the
-- full demo data and fails if any reads a large table sequentially.
--
-- Format: a `-- name: <name>` line, free comment lines (parameters, the
-- index that serves it), then the statement, ending with `;` at the end of a
-- line.  $n are parameters; an optional filter or cursor is passed as NULL.
-- Unnamed statements are planned with their actual parameter values, so a
-- `$n IS NULL OR ...` filter folds away at plan time instead of defeating
-- the index.
--
-- Keyset cursors carry the last row's sort key; DESC order throughout
-- ("newest first"), the row comparison `(a, b) < ($x, $y)` walks the index
-- backwards from the cursor.


-- name: user_by_email
-- Login.  $1 email.  Index: users_email_lower_key.
SELECT user_id, email, password_hash, display_name, role
  FROM users
 WHERE lower(email) = lower($1);

-- name: course_get
-- GET /courses/{id}.  $1 course_id.  Index: courses_pkey, users_pkey.
SELECT c.course_id, c.title, c.summary, c.description, c.category, c.level,
       c.language, c.published, c.published_at, c.created_at, c.updated_at,
       c.enrollment_count, c.instructor_id,
       u.display_name AS instructor_display_name
  FROM courses c
  JOIN users u ON u.user_id = c.instructor_id
 WHERE c.course_id = $1;

-- name: course_videos
-- $1 course_id.  Index: videos_course_idx (course_id, position, video_id).
SELECT video_id, title, position, duration_seconds, status
  FROM videos
 WHERE course_id = $1
 ORDER BY position, video_id;

-- name: course_quizzes
-- $1 course_id.  Index: quizzes_course_idx; questions_quiz_idx (index-only
-- count per quiz).
SELECT q.quiz_id, q.title, q.passing_score,
       (SELECT count(*) FROM questions qq WHERE qq.quiz_id = q.quiz_id)
           AS question_count
  FROM quizzes q
 WHERE q.course_id = $1
 ORDER BY q.quiz_id;

-- name: enrollment_exists
-- Access check on every video, progress and quiz call.  $1 user_id,
-- $2 course_id.  Index: enrollments_pkey.
SELECT status, enrolled_at
  FROM enrollments
 WHERE user_id = $1 AND course_id = $2;

-- name: enroll
-- $1 user_id, $2 course_id.  Returns a row only when newly enrolled (201);
-- no row means already enrolled (200, read it with enrollment_exists) or
-- not published (check the course first: 404).  The counter trigger sees
-- only real inserts.
INSERT INTO enrollments (user_id, course_id)
SELECT $1, c.course_id FROM courses c WHERE c.course_id = $2 AND c.published
ON CONFLICT (user_id, course_id) DO NOTHING
RETURNING course_id, enrolled_at, status;

-- name: unenroll
-- $1 user_id, $2 course_id.
DELETE FROM enrollments WHERE user_id = $1 AND course_id = $2;

-- name: enrollments_of_user
-- GET /me/enrollments.  $1 user_id, $2 cursor enrolled_at (NULL first),
-- $3 cursor course_id, $4 page size, $5 offset.
-- Index: enrollments_user_idx (user_id, enrolled_at, course_id) backwards.
SELECT e.course_id, e.enrolled_at, e.status, e.progress_percent,
       e.completed_at, c.title, c.summary, c.category, c.level, c.language,
       c.instructor_id, u.display_name AS instructor_display_name,
       c.enrollment_count, c.published_at
  FROM enrollments e
  JOIN courses c ON c.course_id = e.course_id
  JOIN users u ON u.user_id = c.instructor_id
 WHERE e.user_id = $1
   AND ($2::timestamptz IS NULL
        OR (e.enrolled_at, e.course_id) < ($2::timestamptz, $3::bigint))
 ORDER BY e.enrolled_at DESC, e.course_id DESC
 LIMIT $4 OFFSET $5;

-- name: enrollments_of_course
-- GET /courses/{id}/enrollments.  $1 course_id, $2 cursor enrolled_at,
-- $3 cursor user_id, $4 page size, $5 offset.
-- Index: enrollments_course_idx (course_id, enrolled_at, user_id).
SELECT e.user_id, u.display_name, e.enrolled_at, e.status,
       e.progress_percent, e.completed_at
  FROM enrollments e
  JOIN users u ON u.user_id = e.user_id
 WHERE e.course_id = $1
   AND ($2::timestamptz IS NULL
        OR (e.enrolled_at, e.user_id) < ($2::timestamptz, $3::bigint))
 ORDER BY e.enrolled_at DESC, e.user_id DESC
 LIMIT $4 OFFSET $5;

-- name: progress_get
-- GET /videos/{id}/progress.  $1 user_id, $2 video_id.  No row: nothing
-- watched yet (report zeros).  Index: video_progress_pkey, videos_pkey.
SELECT v.video_id, v.duration_seconds, p.position_seconds,
       p.watched_seconds, p.completed_at, p.updated_at
  FROM video_progress p
  JOIN videos v ON v.video_id = p.video_id
 WHERE p.user_id = $1 AND p.video_id = $2;

-- name: progress_upsert
-- POST /videos/{id}/progress.  $1 user_id, $2 video_id, $3 position
-- seconds, $4 watched intervals as an int4multirange literal
-- ('{[0,30),[60,90)}'), $5 completion threshold (0.9).
-- Watched intervals are clipped to the video's duration and merged into
-- the union; completed_at is set once, the first time the union covers the
-- threshold.  `newly_completed` tells the caller to emit the event (true
-- only for the statement that set completed_at: statement_timestamp()).
-- Index: video_progress_pkey (ON CONFLICT), videos_pkey.
WITH v AS (
    SELECT video_id, duration_seconds,
           $4::int4multirange
             * int4multirange(int4range(0, duration_seconds)) AS add
      FROM videos WHERE video_id = $2
)
INSERT INTO video_progress AS p
       (user_id, video_id, position_seconds, watched, completed_at,
        updated_at)
SELECT $1, v.video_id, $3, v.add,
       CASE WHEN v.duration_seconds > 0
             AND elearn_int4multirange_length(v.add)
                 >= ceil($5::numeric * v.duration_seconds)
            THEN statement_timestamp() END,
       now()
  FROM v
ON CONFLICT (user_id, video_id) DO UPDATE
   SET position_seconds = EXCLUDED.position_seconds,
       watched = p.watched + EXCLUDED.watched,
       completed_at = coalesce(p.completed_at,
           (SELECT statement_timestamp() FROM v
             WHERE v.duration_seconds > 0
               AND elearn_int4multirange_length(p.watched + EXCLUDED.watched)
                   >= ceil($5::numeric * v.duration_seconds))),
       updated_at = now()
RETURNING video_id, position_seconds, watched_seconds, completed_at,
          completed_at = statement_timestamp() AS newly_completed,
          updated_at;

-- name: quiz_submissions_of_quiz
-- GET /quizzes/{id}/submissions.  $1 quiz_id, $2 cursor submitted_at
-- (NULL first), $3 cursor submission_id, $4 page size, $5 offset.
-- Index: quiz_submissions_quiz_idx per partition; the Append visits the
-- newest partition first and stops when the page is full.
SELECT s.submission_id, s.user_id, u.display_name, s.status, s.score,
       s.max_score, s.passed, s.submitted_at, s.graded_at
  FROM quiz_submissions s
  JOIN users u ON u.user_id = s.user_id
 WHERE s.quiz_id = $1
   AND ($2::timestamptz IS NULL
        OR (s.submitted_at, s.submission_id) < ($2::timestamptz, $3::bigint))
 ORDER BY s.submitted_at DESC, s.submission_id DESC
 LIMIT $4 OFFSET $5;

-- name: quiz_submissions_of_user
-- A learner's submissions, optionally for one quiz.  $1 user_id, $2 quiz_id
-- (NULL = all), $3 cursor submitted_at, $4 cursor submission_id,
-- $5 page size.  Index: quiz_submissions_user_idx per partition.
SELECT s.submission_id, s.quiz_id, s.status, s.score, s.max_score,
       s.passed, s.submitted_at, s.graded_at
  FROM quiz_submissions s
 WHERE s.user_id = $1
   AND ($2::bigint IS NULL OR s.quiz_id = $2)
   AND ($3::timestamptz IS NULL
        OR (s.submitted_at, s.submission_id) < ($3::timestamptz, $4::bigint))
 ORDER BY s.submitted_at DESC, s.submission_id DESC
 LIMIT $5;

-- name: submission_get
-- GET /submissions/{id}.  $1 submission_id.  The id alone does not name
-- the partition: one primary-key probe per partition (a handful).
SELECT s.submission_id, s.quiz_id, s.user_id, s.status, s.score,
       s.max_score, s.passed, s.results, s.submitted_at, s.graded_at,
       q.course_id, c.instructor_id
  FROM quiz_submissions s
  JOIN quizzes q ON q.quiz_id = s.quiz_id
  JOIN courses c ON c.course_id = q.course_id
 WHERE s.submission_id = $1;

-- name: analytics_of_instructor
-- GET /instructors/me/analytics: one query, no N+1 (review finding 4).
-- $1 instructor user_id.  Index: courses_instructor_idx,
-- course_analytics_summary_pkey.  The LATERAL ... LIMIT 1 keeps it a
-- primary-key probe per course: as a plain join the planner hashes the
-- whole summary table once an instructor has a few hundred courses.
SELECT c.course_id, c.title,
       coalesce(s.enrollment_count, 0) AS enrollment_count,
       coalesce(s.active_learners, 0) AS active_learners,
       coalesce(s.completion_count, 0) AS completion_count,
       CASE WHEN coalesce(s.enrollment_count, 0) > 0
            THEN round(s.completion_count::numeric / s.enrollment_count, 4)
       END AS completion_rate,
       CASE WHEN coalesce(s.quiz_submission_count, 0) > 0
            THEN round(s.total_quiz_score / s.quiz_submission_count, 2)
       END AS average_score,
       coalesce(s.quiz_submission_count, 0) AS quiz_submission_count,
       s.score_histogram,
       coalesce(s.updated_at, c.created_at) AS updated_at
  FROM courses c
  LEFT JOIN LATERAL (SELECT * FROM course_analytics_summary x
                      WHERE x.course_id = c.course_id
                      LIMIT 1) s ON true
 WHERE c.instructor_id = $1
 ORDER BY c.course_id;
