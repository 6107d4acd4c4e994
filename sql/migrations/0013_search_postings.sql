-- Precomputed postings for one-word searches (issue 4: "ranking every
-- match of a common word with ts_rank costs hundreds of milliseconds at
-- this size: design around it").
--
-- A search whose websearch_to_tsquery is a single lexeme (every query of
-- the bench mix, and most typed ones) needs, per matching course, only
-- ts_rank(search, that lexeme) and the three facet columns.  ts_rank of a
-- one-lexeme query depends on that course's document alone, so it can be
-- computed when the course is written instead of when it is searched:
-- search_postings holds one row per (lexeme, published course) with that
-- rank and the facet columns.  The statements of sql/api.sql read it for
-- one-lexeme queries (elearn_search_term() not NULL) and keep reading the
-- GIN index and ts_rank for every other query shape.  With it, relevance
-- ranks a one-word query's matches exactly: its candidates are the N best
-- of all matches (the first N of search_postings_rank_idx), where other
-- shapes rank the first N matches by course_id; the ranks are ts_rank's
-- own, which tests/integration/test_search.py checks.
--
-- search_postings_rank_idx INCLUDEs everything a search reads, so the
-- best candidates and the facet counts are index-only scans: a common
-- word's 1,000 best cost ~1,000 index tuples, not 24,000 tsvectors.  The
-- primary key serves the triggers' deletes.
--
-- Kept exact by triggers in the writer's own transaction (a course change
-- is visible to the very next search, as the issue asks): rows are
-- inserted in bulk per statement (COPY of the demo set included), an
-- update rewrites a course's rows only when its search vector,
-- publication or facet columns changed (enrollment counts do not touch
-- them), and a delete or TRUNCATE removes them.

CREATE TABLE search_postings (
    lexeme     text    COLLATE "C" NOT NULL,
    course_id  bigint  NOT NULL,
    rank       real    NOT NULL,
    category   text    NOT NULL,
    level      text    NOT NULL,
    language   text    NOT NULL,
    CONSTRAINT search_postings_pkey PRIMARY KEY (lexeme, course_id)
);

CREATE INDEX search_postings_rank_idx
    ON search_postings (lexeme, rank DESC, course_id DESC)
    INCLUDE (category, level, language);

-- The facet counts of a one-word query: how many published courses of
-- each (category, level, language) hold the lexeme.  A search reads the
-- few cells of its lexeme (~100 at most in the demo set) instead of
-- counting thousands of postings, and its counts are exact at any size.
-- Cells that fall to 0 stay (a read skips them).  Every trigger applies
-- its changes as one upsert in key order, so two writers that share cells
-- lock them in the same order and cannot deadlock.
CREATE TABLE search_term_counts (
    lexeme    text     COLLATE "C" NOT NULL,
    category  text     NOT NULL,
    level     text     NOT NULL,
    language  text     NOT NULL,
    n         integer  NOT NULL,   -- no CHECK: a decrement is an
                                   -- upsert, checked before it merges
    PRIMARY KEY (lexeme, category, level, language)
);

COMMENT ON TABLE search_postings IS
    'one row per (lexeme, published course): ts_rank of the one-lexeme '
    'query and the facet columns; maintained by triggers on courses';


-- The one lexeme of a query, or NULL when the query has any other shape
-- (several terms, negation, phrase, prefix or weight markers, nothing).
-- tsquery's text form quotes an operand and doubles quotes and
-- backslashes in it.
CREATE FUNCTION elearn_search_term(q tsquery) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN numnode(q) = 1 AND q::text ~ '^''.*''$'
            THEN replace(replace(substr(q::text, 2, length(q::text) - 2),
                                 '''''', ''''),
                         '\\', '\')
       END;

-- The one-lexeme query of a lexeme (the inverse of elearn_search_term).
CREATE FUNCTION elearn_search_term_query(lexeme text) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''')
        || '''')::tsquery;


-- The relevance candidates of a search (sql/api.sql's search_relevance
-- and search_facets), with their ranks: for a one-word query its `cap`
-- best matches of all (search_postings_rank_idx, index-only), for any
-- other shape its first `cap` matches by course_id ranked with ts_rank
-- (courses_search_idx).  Only published courses; NULL filters are "any".
-- Inlined into the calling statement, where the planner folds the branch
-- that does not apply away.
CREATE FUNCTION elearn_search_candidates(q text, p_category text,
                                         p_level text, p_language text,
                                         cap integer)
RETURNS TABLE (course_id bigint, rank real)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    (SELECT sp.course_id, sp.rank
       FROM search_postings sp
      WHERE sp.lexeme = elearn_search_term(websearch_to_tsquery('english', q))
        AND (p_category IS NULL OR sp.category = p_category)
        AND (p_level IS NULL OR sp.level = p_level)
        AND (p_language IS NULL OR sp.language = p_language)
      ORDER BY sp.rank DESC, sp.course_id DESC
      LIMIT cap)
    UNION ALL
    SELECT cand.course_id,
           ts_rank(cand.search, websearch_to_tsquery('english', q))
      FROM (SELECT c.course_id, c.search
              FROM courses c
             WHERE elearn_search_term(websearch_to_tsquery('english', q))
                   IS NULL
               AND c.published
               AND c.search @@ websearch_to_tsquery('english', q)
               AND (p_category IS NULL OR c.category = p_category)
               AND (p_level IS NULL OR c.level = p_level)
               AND (p_language IS NULL OR c.language = p_language)
             ORDER BY c.course_id
             LIMIT cap) cand
$$;

-- Adds (+1) the cells of the new courses' published versions and takes
-- away (-1) those of the old ones, as one upsert in key order.
CREATE FUNCTION elearn_search_counts_add(p_old courses[], p_new courses[])
RETURNS void
LANGUAGE sql
SET search_path = public, pg_catalog
AS $$
    INSERT INTO search_term_counts AS t (lexeme, category, level, language,
                                         n)
    SELECT u.lexeme, d.category, d.level, d.language, sum(d.sign)
      FROM (SELECT o.search, o.category, o.level, o.language, -1 AS sign
              FROM unnest(p_old) o
             WHERE o.published
            UNION ALL
            SELECT n.search, n.category, n.level, n.language, 1
              FROM unnest(p_new) n
             WHERE n.published) d,
           unnest(tsvector_to_array(d.search)) AS u (lexeme)
     GROUP BY 1, 2, 3, 4
    HAVING sum(d.sign) <> 0
     ORDER BY 1, 2, 3, 4
    ON CONFLICT (lexeme, category, level, language)
       DO UPDATE SET n = t.n + excluded.n
$$;

-- Writes the postings of the published ones of the given courses.
CREATE FUNCTION elearn_search_postings_add(p_new courses[]) RETURNS void
LANGUAGE sql
SET search_path = public, pg_catalog
AS $$
    INSERT INTO search_postings (lexeme, course_id, rank, category, level,
                                 language)
    SELECT u.lexeme, n.course_id,
           ts_rank(n.search, elearn_search_term_query(u.lexeme)),
           n.category, n.level, n.language
      FROM unnest(p_new) n, unnest(n.search) u
     WHERE n.published
$$;

CREATE FUNCTION elearn_search_postings_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_catalog
AS $$
BEGIN
    PERFORM elearn_search_postings_add(array_agg(n::courses)),
            elearn_search_counts_add('{}', array_agg(n::courses))
       FROM elearn_new_courses n;
    RETURN NULL;
END
$$;

CREATE FUNCTION elearn_search_postings_update() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_catalog
AS $$
BEGIN
    DELETE FROM search_postings p
     USING unnest(tsvector_to_array(OLD.search)) AS u (lexeme)
     WHERE p.lexeme = u.lexeme AND p.course_id = OLD.course_id;
    PERFORM elearn_search_postings_add(ARRAY[NEW]),
            elearn_search_counts_add(ARRAY[OLD], ARRAY[NEW]);
    RETURN NULL;
END
$$;

CREATE FUNCTION elearn_search_postings_delete() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_catalog
AS $$
BEGIN
    DELETE FROM search_postings p
     USING elearn_old_courses o,
           unnest(tsvector_to_array(o.search)) AS u (lexeme)
     WHERE p.lexeme = u.lexeme AND p.course_id = o.course_id;
    PERFORM elearn_search_counts_add(array_agg(o::courses), '{}')
       FROM elearn_old_courses o;
    RETURN NULL;
END
$$;

CREATE FUNCTION elearn_search_postings_truncate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_catalog
AS $$
BEGIN
    TRUNCATE search_postings, search_term_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER courses_search_postings_insert
    AFTER INSERT ON courses
    REFERENCING NEW TABLE AS elearn_new_courses
    FOR EACH STATEMENT EXECUTE FUNCTION elearn_search_postings_insert();

CREATE TRIGGER courses_search_postings_update
    AFTER UPDATE OF title, summary, description, published, category,
                    level, language
    ON courses
    FOR EACH ROW
    WHEN (OLD.search IS DISTINCT FROM NEW.search
          OR OLD.published IS DISTINCT FROM NEW.published
          OR OLD.category IS DISTINCT FROM NEW.category
          OR OLD.level IS DISTINCT FROM NEW.level
          OR OLD.language IS DISTINCT FROM NEW.language)
    EXECUTE FUNCTION elearn_search_postings_update();

CREATE TRIGGER courses_search_postings_delete
    AFTER DELETE ON courses
    REFERENCING OLD TABLE AS elearn_old_courses
    FOR EACH STATEMENT EXECUTE FUNCTION elearn_search_postings_delete();

CREATE TRIGGER courses_search_postings_truncate
    AFTER TRUNCATE ON courses
    FOR EACH STATEMENT EXECUTE FUNCTION elearn_search_postings_truncate();


-- Rebuilds both tables from courses (bulk loads that bypass
-- triggers, e.g. tools/demo-data.py under session_replication_role =
-- replica, call it after loading).  Returns the rows written.  The
-- indexes are built after the rows (12 s instead of 23 s for the
-- 100,000-course demo set's 3.4 million rows).
CREATE FUNCTION elearn_search_postings_rebuild() RETURNS bigint
LANGUAGE plpgsql
SET search_path = public, pg_catalog
SET maintenance_work_mem = '256MB'
AS $$
DECLARE
    n  bigint;
BEGIN
    ALTER TABLE search_postings DROP CONSTRAINT search_postings_pkey;
    DROP INDEX search_postings_rank_idx;
    TRUNCATE search_postings, search_term_counts;
    INSERT INTO search_postings (lexeme, course_id, rank, category, level,
                                 language)
    SELECT u.lexeme, c.course_id,
           ts_rank(c.search, elearn_search_term_query(u.lexeme)),
           c.category, c.level, c.language
      FROM courses c, unnest(c.search) u
     WHERE c.published;
    GET DIAGNOSTICS n = ROW_COUNT;
    ALTER TABLE search_postings ADD CONSTRAINT search_postings_pkey
        PRIMARY KEY (lexeme, course_id);
    CREATE INDEX search_postings_rank_idx
        ON search_postings (lexeme, rank DESC, course_id DESC)
        INCLUDE (category, level, language);
    INSERT INTO search_term_counts (lexeme, category, level, language, n)
    SELECT lexeme, category, level, language, count(*)
      FROM search_postings
     GROUP BY 1, 2, 3, 4;
    RETURN n;
END
$$;

-- the courses already there
SELECT elearn_search_postings_rebuild();
