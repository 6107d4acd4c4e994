-- Statements the nginx module runs, one per name.  tools/sql2h.py turns
-- this file into ngx_elearn_module/src/ngx_http_elearn_sql.h, and the
-- schema tests EXPLAIN every statement here, so the module's SQL lives in
-- exactly one place.  Parameters are $1-style, always bound.
--
-- A statement that answers an endpoint returns the response document as
-- one JSON text column: PostgreSQL builds it, the module passes it through
-- and caches it verbatim.

-- name: course_get_json
-- GET /api/v1/courses/{id}: one published course with its instructor,
-- videos (in course order) and quizzes (with their question counts).
SELECT json_build_object(
         'courseId', c.course_id,
         'title', c.title,
         'summary', c.summary,
         'description', c.description,
         'category', c.category,
         'level', c.level,
         'language', c.language,
         'instructor', json_build_object('userId', u.user_id,
                                         'displayName', u.display_name),
         'videos', COALESCE((
             SELECT json_agg(json_build_object(
                      'videoId', v.video_id,
                      'title', v.title,
                      'durationSeconds', v.duration_seconds,
                      'status', v.status) ORDER BY v.position, v.video_id)
               FROM videos v
              WHERE v.course_id = c.course_id), '[]'::json),
         'quizzes', COALESCE((
             SELECT json_agg(json_build_object(
                      'quizId', q.quiz_id,
                      'title', q.title,
                      'questionCount', (SELECT count(*)
                                          FROM questions qq
                                         WHERE qq.quiz_id = q.quiz_id))
                      ORDER BY q.quiz_id)
               FROM quizzes q
              WHERE q.course_id = c.course_id), '[]'::json),
         'enrollmentCount', c.enrollment_count,
         'publishedAt', to_char(c.published_at AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
         'updatedAt', to_char(c.updated_at AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text
  FROM courses c
  JOIN users u ON u.user_id = c.instructor_id
 WHERE c.course_id = $1::bigint
   AND c.published;

-- name: user_insert
-- POST /api/v1/auth/register and /api/v1/admin/users: $1 email (as
-- given), $2 Argon2id PHC string, $3 display name, $4 role.  No row back
-- when the email is taken in any letter case (users_email_lower_key): the
-- module answers 409.
-- params: ["schema-test@example.com", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g", "Schema Test", "student"]
-- params: ["STUDENT@elearn.dev", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g", "Taken", "student"]
INSERT INTO users (email, password_hash, display_name, role)
VALUES ($1, $2, $3, $4)
ON CONFLICT ((lower(email))) DO NOTHING
RETURNING user_id, email, display_name, role;

-- name: user_login
-- POST /api/v1/auth/login: $1 email, in any letter case.  Index:
-- users_email_lower_key.
-- params: ["Student@Elearn.dev"]
-- params: ["nobody@example.com"]
SELECT user_id, password_hash, role, display_name
  FROM users
 WHERE lower(email) = lower($1);

-- name: user_get
-- GET /api/v1/me on a miss of the worker's cache: $1 user id.  Index:
-- users_pkey.
-- params: [1]
SELECT email, display_name, role
  FROM users
 WHERE user_id = $1::bigint;
