-- Live session statements of the nginx module (ngx_http_elearn_live.c):
-- create, read, close, and the check a WebSocket join makes before the
-- upgrade.  Same rules as sql/api.sql: one statement per name, parameters
-- always bound.  Who may do what is decided in C from the columns these
-- return (owner, enrolled), so that 403 and 404 stay apart.

-- name: live_create
-- POST /api/v1/courses/{id}/live-sessions: $1 course id, $2 title, $3
-- capacity.  The router has checked that the caller owns the course.
-- params: [1, "Office hours", 100]
INSERT INTO live_sessions (course_id, title, capacity)
VALUES ($1::bigint, $2::text, $3::integer)
RETURNING session_id;

-- name: live_get
-- GET /api/v1/live-sessions/{id}, POST .../close and the join: $1 session
-- id, $2 the caller's user id.  No row when the session does not exist.
-- Columns: session_id, course_id, title, capacity, status, the course's
-- instructor, whether $2 is enrolled in the course, $2's display name.
-- params: [1, 3]
SELECT s.session_id, s.course_id, s.title, s.capacity, s.status,
       c.instructor_id,
       EXISTS (SELECT 1 FROM enrollments e
                WHERE e.user_id = $2::bigint
                  AND e.course_id = s.course_id)::text,
       COALESCE((SELECT u.display_name FROM users u
                  WHERE u.user_id = $2::bigint), '')
  FROM live_sessions s
  JOIN courses c ON c.course_id = s.course_id
 WHERE s.session_id = $1::bigint;

-- name: live_close
-- POST /api/v1/live-sessions/{id}/close, after live_get found the caller
-- allowed: $1 session id.  Idempotent: closing a closed session changes
-- nothing and still answers a row.
-- params: [1]
UPDATE live_sessions
   SET status = 'closed',
       closed_at = COALESCE(closed_at, now())
 WHERE session_id = $1::bigint
RETURNING session_id;
