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
-- videos (in course order) and quizzes (with their question counts); $2
-- true also finds an unpublished one (course writes answer the document
-- they wrote with it: one statement builds the course document).
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
   AND (c.published OR $2::boolean);

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

-- Catalog search (GET /api/v1/courses/search).  Each page statement
-- returns one row per course: the course item as JSON text (courses.item,
-- kept with the row since migration 0016; the module joins them into the
-- answer), its sort key as text and its id (the
-- module signs both into the next cursor).  Only published courses.
-- $1 q is websearch syntax, bound (never spliced); category, level and
-- language are NULL for "any".  A cursor's key is NULL on the first page
-- (unnamed statements are planned with their values, so the NULL folds
-- away).  DESC order throughout; `(key, id) < (cursor)` continues after
-- the last row shown, which keeps a walk stable under inserts.
-- newest keys are published_at in microseconds since the epoch (exact,
-- whatever the session's DateStyle), popular keys enrollment_count,
-- relevance keys the real ts_rank.

-- name: search_relevance
-- sort=relevance with q.  $1 q, $2 category, $3 level, $4 language,
-- $5 candidate cap, $6 cursor rank (real), $7 cursor course_id,
-- $8 page size, $9 offset.
-- ts_rank reads every candidate's tsvector (FIELD-NOTES: ranking 58k
-- matches ~650 ms), so $5 candidates at most are ranked.  A one-word
-- query (the commonest shape) reads ranks computed when each course was
-- written (search_postings, migration 0013): its candidates are its $5
-- best matches of all, exactly.  Any other shape ranks a bounded,
-- deterministic set: its first $5 matches in course_id order (the
-- oldest; ids only grow, so a course added mid-walk never pushes a
-- candidate out).  Title (A) weighs above summary (B) above description
-- (C).  Matches past the cap are reached with sort=newest or popular.
-- The page is chosen on ids and ranks alone; only its rows are joined
-- and turned into JSON (built for every candidate, the documents cost
-- 3-5 times the ranking).
-- The statement is elearn_search_relevance() (migration 0015): a
-- one-word query runs a plan kept for the session, every other shape is
-- planned for its parameters.
-- Index: search_postings_rank_idx (one word); courses_search_idx (rare
-- words), courses_pkey (common words).
SELECT doc, sort_key, id
  FROM elearn_search_relevance($1, $2, $3, $4, $5::integer, $6::real,
                               $7::bigint, $8::integer, $9::integer);

-- name: search_newest
-- sort=newest with q.  $1 q, $2 category, $3 level, $4 language,
-- $5 cursor published_at (microseconds), $6 cursor course_id,
-- $7 page size, $8 offset.  As in search_relevance, the page is chosen
-- first and only its rows' items are read.
-- Index: courses_search_idx, or courses_published_newest_idx walked
-- backwards when the planner expects many matches.
SELECT c.item,
       (extract(epoch FROM c.published_at) * 1000000)::bigint::text,
       c.course_id
  FROM (SELECT course_id
          FROM courses
         WHERE published
           AND search @@ websearch_to_tsquery('english', $1)
           AND ($2::text IS NULL OR category = $2)
           AND ($3::text IS NULL OR level = $3)
           AND ($4::text IS NULL OR language = $4)
           AND ($5::bigint IS NULL
                OR (published_at, course_id)
                   < ('epoch'::timestamptz
                      + $5::bigint * interval '1 microsecond',
                      $6::bigint))
         ORDER BY published_at DESC, course_id DESC
         LIMIT $7 OFFSET $8) p
  JOIN courses c ON c.course_id = p.course_id
 ORDER BY c.published_at DESC, c.course_id DESC;

-- name: search_popular
-- sort=popular with q.  $1 q, $2 category, $3 level, $4 language,
-- $5 cursor enrollment_count, $6 cursor course_id, $7 page size,
-- $8 offset.  The page first, then its items.
-- Index: courses_search_idx, or courses_published_popular_idx.
SELECT c.item,
       p.enrollment_count::text, c.course_id
  FROM (SELECT course_id, enrollment_count
          FROM courses
         WHERE published
           AND search @@ websearch_to_tsquery('english', $1)
           AND ($2::text IS NULL OR category = $2)
           AND ($3::text IS NULL OR level = $3)
           AND ($4::text IS NULL OR language = $4)
           AND ($5::integer IS NULL
                OR (enrollment_count, course_id)
                   < ($5::integer, $6::bigint))
         ORDER BY enrollment_count DESC, course_id DESC
         LIMIT $7 OFFSET $8) p
  JOIN courses c ON c.course_id = p.course_id
 ORDER BY p.enrollment_count DESC, c.course_id DESC;

-- name: browse_newest
-- No q, sort=newest (and relevance, which has nothing to rank).
-- $1 category, $2 level, $3 language, $4 cursor published_at
-- (microseconds), $5 cursor course_id, $6 page size, $7 offset.  The
-- page first (an index walk), then its items.
-- Index: courses_published_newest_idx, or
-- courses_published_category_newest_idx with a category.
SELECT c.item,
       (extract(epoch FROM c.published_at) * 1000000)::bigint::text,
       c.course_id
  FROM (SELECT course_id
          FROM courses
         WHERE published
           AND ($1::text IS NULL OR category = $1)
           AND ($2::text IS NULL OR level = $2)
           AND ($3::text IS NULL OR language = $3)
           AND ($4::bigint IS NULL
                OR (published_at, course_id)
                   < ('epoch'::timestamptz
                      + $4::bigint * interval '1 microsecond',
                      $5::bigint))
         ORDER BY published_at DESC, course_id DESC
         LIMIT $6 OFFSET $7) p
  JOIN courses c ON c.course_id = p.course_id
 ORDER BY c.published_at DESC, c.course_id DESC;

-- name: browse_popular
-- No q, sort=popular.  $1 category, $2 level, $3 language, $4 cursor
-- enrollment_count, $5 cursor course_id, $6 page size, $7 offset.  The
-- page first, then its items.
-- Index: courses_published_popular_idx.
SELECT c.item,
       p.enrollment_count::text, c.course_id
  FROM (SELECT course_id, enrollment_count
          FROM courses
         WHERE published
           AND ($1::text IS NULL OR category = $1)
           AND ($2::text IS NULL OR level = $2)
           AND ($3::text IS NULL OR language = $3)
           AND ($4::integer IS NULL
                OR (enrollment_count, course_id)
                   < ($4::integer, $5::bigint))
         ORDER BY enrollment_count DESC, course_id DESC
         LIMIT $6 OFFSET $7) p
  JOIN courses c ON c.course_id = p.course_id
 ORDER BY p.enrollment_count DESC, c.course_id DESC;

-- name: search_facets
-- The total and the facet counts of a search or browse, and with $6 > 0
-- the ranked candidate list of search_relevance: the total, then the
-- facets as one JSON text {"category": [{value, count}], "level": [...],
-- "language": [...]}, then "id:rank,id:rank,..." (best first, as
-- search_relevance orders them; NULL with $6 0 or no q).  $1 q (NULL =
-- browse), $2 category, $3 level, $4 language, $5 cap, $6 candidate cap.
-- Every filter applies to every facet (a facet shows what is inside the
-- current result).  A one-word query's counts are exact: they are sums
-- of its cells in search_term_counts (migration 0013).  Other shapes
-- count at most $5 matches (the module passes 10000, where offset paging
-- stops): exact below it, lower bounds at it (an exact count of a common
-- word's 59k matches costs ~55 ms, the capped one ~12 ms).  The module
-- keeps the row for the query (not the
-- page), so every later page of a relevance search is a slice of the
-- list and search_by_ids.  The candidates are search_relevance's.  The
-- statement is elearn_search_facets() (migration 0015): a one-word query
-- runs a plan kept for the session, every other shape is planned for its
-- parameters.  One word: search_postings_rank_idx (index-only) and
-- search_term_counts_pkey; other q: courses_search_idx; without q:
-- courses_published_facets_idx.
SELECT total, facets, candidates
  FROM elearn_search_facets($1, $2, $3, $4, $5::integer, $6::integer);

-- name: search_by_ids
-- A page of a relevance search cut from the ranked list that
-- search_facets returned: $1 the ids in page order, $2 their ranks (the
-- sort keys the module signs into the next cursor).  Same rows as
-- search_relevance; a course unpublished since is left out (and bumped
-- the catalog version, so the list it came from is gone too).  The
-- statement is elearn_search_by_ids() (migrations 0015 and 0016), on a
-- plan kept for the session; the items are the courses' stored ones.
-- Index: courses_pkey.
-- params: ["{1,2,3}", "{0.6,0.5,0.4}"]
SELECT doc, sort_key, id
  FROM elearn_search_by_ids($1::bigint[], $2::text[]);

-- name: suggest
-- GET /api/v1/courses/suggest: as one JSON text, up to 8 published
-- titles starting with $1 (case-insensitive; LIKE wildcards in $1 are
-- escaped here, so they match themselves).  Index:
-- courses_title_prefix_idx (lower(title) COLLATE "C", course_id): the
-- prefix range and the order in one walk.
SELECT coalesce(json_agg(json_build_object('courseId', s.course_id,
                                           'title', s.title)
                         ORDER BY s.t, s.course_id), '[]')::text
  FROM (SELECT course_id, title, lower(title) COLLATE "C" AS t
          FROM courses
         WHERE published
           AND lower(title) COLLATE "C"
               LIKE replace(replace(replace(lower($1), '\', '\\'),
                                    '%', '\%'), '_', '\_') || '%'
         ORDER BY lower(title) COLLATE "C", course_id
         LIMIT 8) s;

-- name: course_owner
-- The router's ownership check of routes marked OWNER_COURSE: who owns
-- the course of the path (published or not).
-- params: [1]
SELECT instructor_id
  FROM courses
 WHERE course_id = $1::bigint;

-- name: course_popular
-- The ids of the $1 most popular published courses, most enrolled first:
-- what worker 0 puts in the course cache at start (elearn_cache_warm).
-- Index: courses_published_popular_idx, walked backwards.
-- params: [100]
SELECT course_id
  FROM courses
 WHERE published
 ORDER BY enrollment_count DESC, course_id DESC
 LIMIT $1;
