-- Enrollment statements of the nginx module (ngx_http_elearn_enrollment.c):
-- enroll, unenroll, my enrollments and a course's enrollments.  Same rules
-- as sql/api.sql: one statement per name, parameters always bound, list
-- pages return one JSON text per row with the keyset columns beside it.
-- The courses.enrollment_count triggers (0002) keep the counter right for
-- every insert and delete here.

-- name: enrollment_create
-- POST /api/v1/courses/{id}/enrollments: $1 user id, $2 course id.  No row
-- when the course is missing or unpublished (404).  created is true when
-- this statement inserted the enrollment; false when it already existed
-- (idempotent 200).  enrolled_at is NULL only when a concurrent request of
-- the same user inserted it after this statement's snapshot: run again.
-- A new enrollment's enrollment.created event goes into the outbox in the
-- same statement (keyed by course, as every elearn.enrollments event).
-- params: [3, 1]
WITH c AS (
    SELECT course_id
      FROM courses
     WHERE course_id = $2::bigint
       AND published
), ins AS (
    INSERT INTO enrollments (user_id, course_id)
    SELECT $1::bigint, course_id FROM c
    ON CONFLICT (user_id, course_id) DO NOTHING
    RETURNING enrolled_at, status
), ev AS (
    INSERT INTO event_outbox (topic, key, payload)
    SELECT 'elearn.enrollments', $2::bigint::text,
           elearn_event('enrollment.created', json_build_object(
               'userId', $1::bigint, 'courseId', $2::bigint,
               'enrolledAt', to_char(ins.enrolled_at AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
      FROM ins
)
SELECT (ins.enrolled_at IS NOT NULL)::text,
       to_char(COALESCE(ins.enrolled_at, e.enrolled_at) AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       COALESCE(ins.status, e.status)
  FROM c
  LEFT JOIN ins ON true
  LEFT JOIN enrollments e
         ON e.user_id = $1::bigint AND e.course_id = c.course_id;

-- name: enrollment_delete
-- DELETE /api/v1/courses/{id}/enrollments/me: $1 user id, $2 course id.
-- One row (the time of the deletion) when an enrollment was deleted, none
-- when there was none; a deletion's enrollment.deleted event goes into
-- the outbox in the same statement.
-- params: [3, 1]
WITH d AS (
    DELETE FROM enrollments
     WHERE user_id = $1::bigint
       AND course_id = $2::bigint
    RETURNING to_char(now() AT TIME ZONE 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
), ev AS (
    INSERT INTO event_outbox (topic, key, payload)
    SELECT 'elearn.enrollments', $2::bigint::text,
           elearn_event('enrollment.deleted', json_build_object(
               'userId', $1::bigint, 'courseId', $2::bigint,
               'unenrolledAt', d.at))
      FROM d
)
SELECT at FROM d;

-- name: enrollment_mine
-- GET /api/v1/me/enrollments: $1 user id, $2 cursor enrolled_at
-- (microseconds since the epoch), $3 cursor course id, $4 page size,
-- $5 offset.  Newest enrollment first, keyset (enrolled_at, course_id).
-- Index: enrollments_user_idx walked backwards.
-- params: [3, null, null, 21, 0]
-- params: [3, 4102444800000000, 1, 21, 0]
SELECT json_build_object(
         'course', json_build_object(
             'courseId', c.course_id, 'title', c.title,
             'summary', c.summary, 'category', c.category,
             'level', c.level, 'language', c.language,
             'instructor', json_build_object('userId', u.user_id,
                                             'displayName', u.display_name),
             'enrollmentCount', c.enrollment_count,
             'publishedAt', to_char(c.published_at AT TIME ZONE 'UTC',
                                    'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
         'enrolledAt', to_char(e.enrolled_at AT TIME ZONE 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
         'progressPercent', e.progress_percent,
         'completedAt', to_char(e.completed_at AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text,
       (extract(epoch FROM e.enrolled_at) * 1000000)::bigint::text,
       e.course_id
  FROM enrollments e
  JOIN courses c ON c.course_id = e.course_id
  JOIN users u ON u.user_id = c.instructor_id
 WHERE e.user_id = $1::bigint
   AND ($2::bigint IS NULL
        OR (e.enrolled_at, e.course_id)
           < ('epoch'::timestamptz + $2::bigint * interval '1 microsecond',
              $3::bigint))
 ORDER BY e.enrolled_at DESC, e.course_id DESC
 LIMIT $4 OFFSET $5;

-- name: enrollment_mine_count
-- The total of GET /api/v1/me/enrollments (offset paging): $1 user id.
-- Index: enrollments_user_idx (index-only).
-- params: [3]
SELECT count(*)
  FROM enrollments
 WHERE user_id = $1::bigint;

-- name: enrollment_of_course
-- GET /api/v1/courses/{id}/enrollments (owner): $1 course id, $2 cursor
-- enrolled_at (microseconds since the epoch), $3 cursor user id, $4 page
-- size, $5 offset.  Newest first, keyset (enrolled_at, user_id).
-- Index: enrollments_course_idx walked backwards.
-- params: [1, null, null, 21, 0]
-- params: [1, 4102444800000000, 1, 21, 0]
SELECT json_build_object(
         'user', json_build_object('userId', u.user_id,
                                   'displayName', u.display_name),
         'enrolledAt', to_char(e.enrolled_at AT TIME ZONE 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
         'progressPercent', e.progress_percent,
         'completedAt', to_char(e.completed_at AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text,
       (extract(epoch FROM e.enrolled_at) * 1000000)::bigint::text,
       e.user_id
  FROM enrollments e
  JOIN users u ON u.user_id = e.user_id
 WHERE e.course_id = $1::bigint
   AND ($2::bigint IS NULL
        OR (e.enrolled_at, e.user_id)
           < ('epoch'::timestamptz + $2::bigint * interval '1 microsecond',
              $3::bigint))
 ORDER BY e.enrolled_at DESC, e.user_id DESC
 LIMIT $4 OFFSET $5;

-- name: enrollment_of_course_count
-- The total of GET /api/v1/courses/{id}/enrollments (offset paging): the
-- trigger-kept counter, exact and free.  $1 course id.
-- params: [1]
SELECT enrollment_count
  FROM courses
 WHERE course_id = $1::bigint;
