-- The catalog and who is enrolled where.
--
-- courses.search is a stored tsvector (title A, summary B, description C):
-- computing to_tsvector() per row at query time is 100-1000x slower.  The
-- catalog only ever searches, browses and suggests *published* courses, so
-- those indexes are partial (WHERE published): smaller, and an
-- instructor's drafts never cost the public search anything.
--
-- courses.enrollment_count is kept by statement-level triggers on
-- enrollments (transition tables: one UPDATE per statement, so a bulk COPY
-- or a multi-row insert costs one grouped update, not one per row).  It is
-- what sort=popular orders by.  Because it is indexed, each enrollment is a
-- non-HOT update of its course row; enrollments are rare events compared to
-- reads, so that is the right trade (see the course analytics summary for
-- the high-rate counters, which live elsewhere).

CREATE TABLE courses (
    course_id        bigserial PRIMARY KEY,
    instructor_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    title            text NOT NULL
                     CHECK (char_length(title) BETWEEN 1 AND 200),
    summary          text NOT NULL DEFAULT ''
                     CHECK (char_length(summary) <= 1000),
    description      text NOT NULL DEFAULT ''
                     CHECK (char_length(description) <= 20000),
    category         text NOT NULL
                     CHECK (char_length(category) BETWEEN 1 AND 64),
    level            text NOT NULL
                     CHECK (level IN ('beginner', 'intermediate', 'advanced')),
    language         text NOT NULL DEFAULT 'en'
                     CHECK (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$'),
    published        boolean NOT NULL DEFAULT false,
    published_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    enrollment_count integer NOT NULL DEFAULT 0
                     CHECK (enrollment_count >= 0),
    search           tsvector GENERATED ALWAYS AS (
                         setweight(to_tsvector('english'::regconfig,
                                               coalesce(title, '')), 'A') ||
                         setweight(to_tsvector('english'::regconfig,
                                               coalesce(summary, '')), 'B') ||
                         setweight(to_tsvector('english'::regconfig,
                                               coalesce(description, '')), 'C')
                     ) STORED,
    -- keyset paging on (published_at, course_id) needs it set
    CHECK (NOT published OR published_at IS NOT NULL)
) WITH (fillfactor = 90);

-- Instructor's own courses; the FK; analytics_of_instructor.
CREATE INDEX courses_instructor_idx ON courses (instructor_id, course_id);
-- search_*: full-text match over published courses.
CREATE INDEX courses_search_idx ON courses USING gin (search)
    WHERE published;
-- search_newest / browse: keyset (published_at, course_id) DESC.
CREATE INDEX courses_published_newest_idx
    ON courses (published_at, course_id) WHERE published;
-- search_popular / browse_popular: keyset (enrollment_count, course_id) DESC.
CREATE INDEX courses_published_popular_idx
    ON courses (enrollment_count, course_id) WHERE published;
-- browse with a category filter (the facet users click most) stays an
-- index walk that never filters out most of what it reads.
CREATE INDEX courses_published_category_newest_idx
    ON courses (category, published_at, course_id) WHERE published;
-- suggest: prefix typeahead, lower(title) LIKE 'pre%'.  text_pattern_ops
-- because the cluster's collation is C.UTF-8, not "C", so a plain btree
-- cannot serve LIKE.
CREATE INDEX courses_title_prefix_idx
    ON courses (lower(title) text_pattern_ops) WHERE published;
-- search_facets without q: index-only scan instead of reading every row.
CREATE INDEX courses_published_facets_idx
    ON courses (category, level, language) WHERE published;

-- Sets published_at the first time a course is published (kept when it is
-- unpublished and republished, so "newest" does not reshuffle).
CREATE FUNCTION elearn_courses_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.published AND NEW.published_at IS NULL THEN
        NEW.published_at := now();
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER courses_before_write BEFORE INSERT OR UPDATE ON courses
    FOR EACH ROW EXECUTE FUNCTION elearn_courses_before_write();

CREATE TABLE enrollments (
    user_id          bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    course_id        bigint NOT NULL REFERENCES courses ON DELETE CASCADE,
    enrolled_at      timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'completed')),
    progress_percent smallint NOT NULL DEFAULT 0
                     CHECK (progress_percent BETWEEN 0 AND 100),
    completed_at     timestamptz,
    -- the PK is also "is this user enrolled in that course", asked on
    -- every video, progress and quiz call
    PRIMARY KEY (user_id, course_id),
    CHECK ((status = 'completed') = (completed_at IS NOT NULL))
);
-- Review finding 2 asks for (user_id) and (course_id); both become the
-- keyset orderings the lists page by, newest enrollment first.
CREATE INDEX enrollments_user_idx
    ON enrollments (user_id, enrolled_at, course_id);
CREATE INDEX enrollments_course_idx
    ON enrollments (course_id, enrolled_at, user_id);

CREATE FUNCTION elearn_enrollments_count_ins() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE courses c
       SET enrollment_count = c.enrollment_count + d.n
      FROM (SELECT course_id, count(*) AS n FROM new_rows
             GROUP BY course_id ORDER BY course_id) d
     WHERE c.course_id = d.course_id;
    RETURN NULL;
END
$$;
CREATE FUNCTION elearn_enrollments_count_del() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE courses c
       SET enrollment_count = greatest(c.enrollment_count - d.n, 0)
      FROM (SELECT course_id, count(*) AS n FROM old_rows
             GROUP BY course_id ORDER BY course_id) d
     WHERE c.course_id = d.course_id;
    RETURN NULL;
END
$$;
-- A course deleted with its enrollments (ON DELETE CASCADE) is simply not
-- found by the UPDATE: nothing to do.
CREATE TRIGGER enrollments_count_ins AFTER INSERT ON enrollments
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION elearn_enrollments_count_ins();
CREATE TRIGGER enrollments_count_del AFTER DELETE ON enrollments
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION elearn_enrollments_count_del();
-- Moving an enrollment to another course or user would bypass the counter.
CREATE FUNCTION elearn_enrollments_keys_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'enrollments.user_id and course_id cannot change; '
                    'delete and insert instead'
        USING ERRCODE = 'check_violation';
END
$$;
CREATE TRIGGER enrollments_keys_immutable
    BEFORE UPDATE OF user_id, course_id ON enrollments
    FOR EACH ROW WHEN (OLD.user_id <> NEW.user_id
                       OR OLD.course_id <> NEW.course_id)
    EXECUTE FUNCTION elearn_enrollments_keys_immutable();
