-- Course writes (POST /api/v1/courses, PATCH /api/v1/courses/{id}),
-- turned into ngx_http_elearn_sql.h with sql/api.sql.  Each statement
-- writes and answers the course id; the module then reads the document
-- with course_get_json (sql/api.sql, unpublished included), so the answer
-- is what GET /api/v1/courses/{id} returns and the document is built in
-- one place.  The search vector is a generated column: search sees a
-- write as soon as it commits.

-- name: course_insert
-- POST /api/v1/courses: $1 instructor (the caller), $2 title, $3 summary,
-- $4 description, $5 category, $6 level, $7 language, $8 published.
-- publishedAt is set when the course is created published.
-- params: [2, "Schema test course", "", "", "testing", "beginner", "en", false]
-- params: [2, "Schema test course", "s", "d", "testing", "advanced", "pt-br", true]
INSERT INTO courses (instructor_id, title, summary, description,
                     category, level, language, published, published_at)
VALUES ($1::bigint, $2, $3, $4, $5, $6, $7, $8::boolean,
        CASE WHEN $8::boolean THEN now() END)
RETURNING course_id;

-- name: course_update
-- PATCH /api/v1/courses/{id}: $1 course id, then the fields as in
-- course_insert, each NULL when the body leaves it out ($2 title, $3
-- summary, $4 description, $5 category, $6 level, $7 language, $8
-- published).  Every column is NOT NULL, so NULL can only mean "absent"
-- and COALESCE needs no presence flags.  Publishing sets published_at
-- when it was never set; unpublishing keeps it, so a course published
-- again keeps its first publication time.  No row: no such course (the
-- router checked the owner, but the course may have gone since).
-- params: [1, "Schema test course", null, null, null, null, null, null]
-- params: [1, null, "s", "d", "testing", "beginner", "en", true]
UPDATE courses
   SET title = COALESCE($2, title),
       summary = COALESCE($3, summary),
       description = COALESCE($4, description),
       category = COALESCE($5, category),
       level = COALESCE($6, level),
       language = COALESCE($7, language),
       published = COALESCE($8::boolean, published),
       published_at = CASE
                        WHEN COALESCE($8::boolean, published)
                        THEN COALESCE(published_at, now())
                        ELSE published_at
                      END,
       updated_at = now()
 WHERE course_id = $1::bigint
RETURNING course_id;
