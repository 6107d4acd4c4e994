-- Each course keeps its search result item (the contract's JSON of a
-- course in a search or browse page) in the row, as courses.item.
--
-- Building the items was most of what a page costs PostgreSQL: a page
-- of 20 read by id took 0.18 ms of server time with json_build_object,
-- to_char and the instructor's row, and 0.05 ms reading the stored text
-- (pgbench -M prepared, one client, the 100,000-course set; a search of
-- an uncached page is one such statement).  Every write of a course
-- rebuilds its item (a row trigger named to fire after
-- courses_before_write, which sets published_at: PostgreSQL fires them
-- in name order), enrollment counts included (their statement-level
-- trigger updates the rows); an instructor's new display name rebuilds
-- the items of their courses.

ALTER TABLE courses ADD COLUMN item text;

-- the rows are rewritten, not changed: their updated_at stays
ALTER TABLE courses DISABLE TRIGGER courses_before_write;
UPDATE courses c
   SET item = elearn_course_item(c, u)
  FROM users u
 WHERE u.user_id = c.instructor_id;
ALTER TABLE courses ENABLE TRIGGER courses_before_write;

ALTER TABLE courses ALTER COLUMN item SET NOT NULL;

COMMENT ON COLUMN courses.item IS
    'elearn_course_item() of the row and its instructor, kept by the '
    'courses_write_item and users_course_items triggers';

CREATE FUNCTION elearn_courses_write_item() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT elearn_course_item(NEW, u) INTO NEW.item
      FROM users u
     WHERE u.user_id = NEW.instructor_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER courses_write_item BEFORE INSERT OR UPDATE ON courses
    FOR EACH ROW EXECUTE FUNCTION elearn_courses_write_item();

CREATE FUNCTION elearn_users_course_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- courses_write_item rebuilds each item from the new name
    UPDATE courses SET item = '' WHERE instructor_id = NEW.user_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_course_items AFTER UPDATE OF display_name ON users
    FOR EACH ROW WHEN (OLD.display_name IS DISTINCT FROM NEW.display_name)
    EXECUTE FUNCTION elearn_users_course_items();

-- The item is derived, never copied in: both fire under
-- session_replication_role = replica too (tools/demo-data.py's bulk COPY,
-- which turns the other triggers off; a logical replica).
ALTER TABLE courses ENABLE ALWAYS TRIGGER courses_write_item;
ALTER TABLE users ENABLE ALWAYS TRIGGER users_course_items;

-- Migration 0015's relevance-page and page-by-ids functions, reading the
-- stored items instead of building them (the rest is unchanged).
CREATE OR REPLACE FUNCTION elearn_search_relevance(q text, p_category text,
                                                   p_level text,
                                                   p_language text,
                                                   cap integer,
                                                   after_rank real,
                                                   after_id bigint,
                                                   page_size integer,
                                                   page_offset integer)
RETURNS TABLE (doc text, sort_key text, id bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    term text := elearn_search_term(websearch_to_tsquery('english', q));
BEGIN
    IF term IS NOT NULL THEN
        -- search_postings_rank_idx, then courses_pkey
        RETURN QUERY
        SELECT c.item, p.rank::text, p.course_id
          FROM (SELECT r.course_id, r.rank
                  FROM (SELECT sp.course_id, sp.rank
                          FROM search_postings sp
                         WHERE sp.lexeme = term
                           AND (p_category IS NULL
                                OR sp.category = p_category)
                           AND (p_level IS NULL OR sp.level = p_level)
                           AND (p_language IS NULL
                                OR sp.language = p_language)
                         ORDER BY sp.rank DESC, sp.course_id DESC
                         LIMIT cap) r
                 WHERE after_rank IS NULL
                       OR (r.rank, r.course_id) < (after_rank, after_id)
                 ORDER BY r.rank DESC, r.course_id DESC
                 LIMIT page_size OFFSET page_offset) p
          JOIN courses c ON c.course_id = p.course_id
         ORDER BY p.rank DESC, p.course_id DESC;
        RETURN;
    END IF;

    -- other q: courses_search_idx (rare words), courses_pkey (common)
    RETURN QUERY EXECUTE $sql$
        SELECT c.item, p.rank::text, p.course_id
          FROM (SELECT r.course_id, r.rank
                  FROM elearn_search_candidates($1, $2, $3, $4, $5) r
                 WHERE $6 IS NULL OR (r.rank, r.course_id) < ($6, $7)
                 ORDER BY r.rank DESC, r.course_id DESC
                 LIMIT $8 OFFSET $9) p
          JOIN courses c ON c.course_id = p.course_id
         ORDER BY p.rank DESC, p.course_id DESC
    $sql$ USING q, p_category, p_level, p_language, cap, after_rank,
                after_id, page_size, page_offset;
END
$$;

CREATE OR REPLACE FUNCTION elearn_search_by_ids(p_ids bigint[],
                                                p_ranks text[])
RETURNS TABLE (doc text, sort_key text, id bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- courses_pkey
    RETURN QUERY
    SELECT c.item, p.rank, c.course_id
      FROM unnest(p_ids, p_ranks) WITH ORDINALITY AS p (id, rank, o)
      JOIN courses c ON c.course_id = p.id
     WHERE c.published
     ORDER BY p.o;
END
$$;
