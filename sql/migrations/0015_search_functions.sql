-- The facets, relevance-page and page-by-ids statements of a search
-- (sql/api.sql's search_facets, search_relevance and search_by_ids) as
-- functions, so that PostgreSQL plans their commonest shape once per
-- connection instead of once per search.
--
-- Planning the whole statement cost ~0.4 ms a search, as much as running
-- it: it is long, and every shape (one word, other queries, browse) is in
-- it, folded away only once the parameters are known.  A prepared
-- statement does not help: its generic plan (the same plan whatever the
-- parameters) reads the catalog sequentially for other shapes (26-336 ms
-- measured).  Here a one-word query, whose counts and candidates come
-- from search_term_counts and search_postings by lexeme alone, runs a
-- statement of its own whose generic plan is the right one for every
-- lexeme (PL/pgSQL keeps it for the session); every other shape runs as
-- before, planned for its parameters each time (EXECUTE ... USING).  The
-- answer is the same row as the statement's.

-- A course of a result page as the contract's JSON item (the search and
-- browse statements of sql/api.sql and the functions below): one place
-- for its fields.  PostgreSQL inlines it into the calling statement.
CREATE FUNCTION elearn_course_item(c courses, u users) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN json_build_object(
         'courseId', c.course_id, 'title', c.title, 'summary', c.summary,
         'category', c.category, 'level', c.level, 'language', c.language,
         'instructor', json_build_object('userId', u.user_id,
                                         'displayName', u.display_name),
         'enrollmentCount', c.enrollment_count,
         'publishedAt', to_char(c.published_at AT TIME ZONE 'UTC',
                                'YYYY-MM-DD"T"HH24:MI:SS"Z"'))::text;

CREATE FUNCTION elearn_search_facets(q text, p_category text,
                                     p_level text, p_language text,
                                     cap integer, ccap integer)
RETURNS TABLE (total bigint, facets text, candidates text)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    term text := elearn_search_term(websearch_to_tsquery('english', q));
BEGIN
    IF term IS NOT NULL THEN
        -- search_term_counts_pkey and search_postings_rank_idx
        RETURN QUERY
        SELECT coalesce(sum(g.n) FILTER (WHERE g.f = 'total'), 0)::bigint,
               json_build_object(
                 'category', coalesce(json_agg(json_build_object(
                                                 'value', g.v,
                                                 'count', g.n)
                                      ORDER BY g.n DESC, g.v)
                                  FILTER (WHERE g.f = 'category'), '[]'),
                 'level', coalesce(json_agg(json_build_object(
                                              'value', g.v,
                                              'count', g.n)
                                   ORDER BY g.n DESC, g.v)
                               FILTER (WHERE g.f = 'level'), '[]'),
                 'language', coalesce(json_agg(json_build_object(
                                                 'value', g.v,
                                                 'count', g.n)
                                      ORDER BY g.n DESC, g.v)
                                  FILTER (WHERE g.f = 'language'), '[]'))
               ::text,
               (SELECT string_agg(c.course_id || ':' || c.rank::text, ','
                                  ORDER BY c.rank DESC, c.course_id DESC)
                  FROM (SELECT sp.course_id, sp.rank
                          FROM search_postings sp
                         WHERE sp.lexeme = term
                           AND (p_category IS NULL
                                OR sp.category = p_category)
                           AND (p_level IS NULL OR sp.level = p_level)
                           AND (p_language IS NULL
                                OR sp.language = p_language)
                         ORDER BY sp.rank DESC, sp.course_id DESC
                         LIMIT ccap) c)
          FROM (SELECT CASE WHEN GROUPING(t.category) = 0 THEN 'category'
                            WHEN GROUPING(t.level) = 0 THEN 'level'
                            WHEN GROUPING(t.language) = 0 THEN 'language'
                            ELSE 'total' END AS f,
                       coalesce(t.category, t.level, t.language) AS v,
                       sum(t.n) AS n
                  FROM search_term_counts t
                 WHERE t.lexeme = term
                   AND t.n > 0
                   AND (p_category IS NULL OR t.category = p_category)
                   AND (p_level IS NULL OR t.level = p_level)
                   AND (p_language IS NULL OR t.language = p_language)
                 GROUP BY GROUPING SETS ((t.category), (t.level),
                                         (t.language), ())) g;
        RETURN;
    END IF;

    -- other q: courses_search_idx; without q: courses_published_facets_idx
    RETURN QUERY EXECUTE $sql$
        SELECT coalesce(sum(n) FILTER (WHERE f = 'total'), 0)::bigint,
               json_build_object(
                 'category', coalesce(json_agg(json_build_object(
                                                 'value', v, 'count', n)
                                      ORDER BY n DESC, v)
                                  FILTER (WHERE f = 'category'), '[]'),
                 'level', coalesce(json_agg(json_build_object(
                                              'value', v, 'count', n)
                                   ORDER BY n DESC, v)
                               FILTER (WHERE f = 'level'), '[]'),
                 'language', coalesce(json_agg(json_build_object(
                                                 'value', v, 'count', n)
                                      ORDER BY n DESC, v)
                                  FILTER (WHERE f = 'language'), '[]'))
               ::text,
               (SELECT string_agg(r.course_id || ':' || r.rank::text, ','
                                  ORDER BY r.rank DESC, r.course_id DESC)
                  FROM elearn_search_candidates($1, $2, $3, $4, $6) r)
          FROM (SELECT CASE WHEN GROUPING(category) = 0 THEN 'category'
                            WHEN GROUPING(level) = 0 THEN 'level'
                            WHEN GROUPING(language) = 0 THEN 'language'
                            ELSE 'total' END AS f,
                       coalesce(category, level, language) AS v,
                       count(*) AS n
                  FROM (SELECT category, level, language
                          FROM courses
                         WHERE published
                           AND ($1 IS NULL
                                OR search @@ websearch_to_tsquery('english',
                                                                  $1))
                           AND ($2 IS NULL OR category = $2)
                           AND ($3 IS NULL OR level = $3)
                           AND ($4 IS NULL OR language = $4)
                         LIMIT $5) m
                 GROUP BY GROUPING SETS ((category), (level), (language),
                                         ())) g
    $sql$ USING q, p_category, p_level, p_language, cap, ccap;
END
$$;

-- The page statement of a relevance search (sql/api.sql's
-- search_relevance), for the same reason: a one-word query's page comes
-- from search_postings by lexeme alone on a plan kept for the session;
-- every other shape is planned for its parameters as before.
CREATE FUNCTION elearn_search_relevance(q text, p_category text,
                                        p_level text, p_language text,
                                        cap integer, after_rank real,
                                        after_id bigint, page_size integer,
                                        page_offset integer)
RETURNS TABLE (doc text, sort_key text, id bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    term text := elearn_search_term(websearch_to_tsquery('english', q));
BEGIN
    IF term IS NOT NULL THEN
        -- search_postings_rank_idx, then courses_pkey and users_pkey
        RETURN QUERY
        SELECT elearn_course_item(c, u),
               p.rank::text, p.course_id
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
          JOIN users u ON u.user_id = c.instructor_id
         ORDER BY p.rank DESC, p.course_id DESC;
        RETURN;
    END IF;

    -- other q: courses_search_idx (rare words), courses_pkey (common)
    RETURN QUERY EXECUTE $sql$
        SELECT elearn_course_item(c, u),
               p.rank::text, p.course_id
          FROM (SELECT r.course_id, r.rank
                  FROM elearn_search_candidates($1, $2, $3, $4, $5) r
                 WHERE $6 IS NULL OR (r.rank, r.course_id) < ($6, $7)
                 ORDER BY r.rank DESC, r.course_id DESC
                 LIMIT $8 OFFSET $9) p
          JOIN courses c ON c.course_id = p.course_id
          JOIN users u ON u.user_id = c.instructor_id
         ORDER BY p.rank DESC, p.course_id DESC
    $sql$ USING q, p_category, p_level, p_language, cap, after_rank,
                after_id, page_size, page_offset;
END
$$;

-- A page of a relevance search cut from the ranked list (sql/api.sql's
-- search_by_ids): one plan for every page, kept for the session (its
-- planning cost twice its run, ~1.4 ms a page against ~0.45).
CREATE FUNCTION elearn_search_by_ids(p_ids bigint[], p_ranks text[])
RETURNS TABLE (doc text, sort_key text, id bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- courses_pkey, users_pkey
    RETURN QUERY
    SELECT elearn_course_item(c, u), p.rank, c.course_id
      FROM unnest(p_ids, p_ranks) WITH ORDINALITY AS p (id, rank, o)
      JOIN courses c ON c.course_id = p.id
      JOIN users u ON u.user_id = c.instructor_id
     WHERE c.published
     ORDER BY p.o;
END
$$;
