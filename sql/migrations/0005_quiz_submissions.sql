-- Quiz submissions, partitioned by quarter (review finding 6).
--
-- Partitions are named quiz_submissions_YYYY_qN and cover
-- [start of quarter, start of next quarter) in UTC.
-- elearn_manage_quiz_partitions() creates the current and the next `ahead`
-- quarters and detaches those entirely older than the retention into the
-- `archive` schema (same name), where they wait for export to cold storage
-- and a deliberate DROP: nothing here ever deletes submissions.  Run it
-- daily (any scheduler; it is idempotent); with ahead = 2 a missed run has
-- months of slack.
--
-- No DEFAULT partition, on purpose.  A row outside every partition fails
-- loudly ("no partition of relation ... found for row"), which can only
-- happen if the function has not run for months, and is then fixed by
-- running it.  With a DEFAULT partition such rows would land there
-- silently, and creating the proper partition later would have to scan
-- the default and fail while it holds matching rows (or need a manual
-- move under an exclusive lock): a quiet trap traded for a loud one.
--
-- The answers size limit (10 KiB, review finding 6) is measured as
-- octet_length(answers::text): the size of the JSON text, which is what the
-- API promises ("at most 10 KiB") and what a client can reason about.
-- pg_column_size() would measure jsonb's binary layout instead (headers,
-- alignment; larger than the text for many small values) and could change
-- between PostgreSQL versions.  answers::text is canonical jsonb output
-- (", " and ": " separators), so the module must apply the same measure
-- (or a smaller body cap) to answer 413/422 before the database does.
--
-- The primary key must contain the partition key, so submission_id alone
-- is not unique-constrained (the sequence makes it unique in practice) and
-- Idempotency-Key uniqueness lives in a small unpartitioned table.

CREATE TABLE quiz_submissions (
    submission_id   bigserial,
    quiz_id         bigint NOT NULL REFERENCES quizzes ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    answers         jsonb NOT NULL
                    CONSTRAINT quiz_submissions_answers_size
                    CHECK (octet_length(answers::text) <= 10240),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'graded', 'failed')),
    score           numeric(8,2),
    max_score       numeric(8,2),
    passed          boolean,
    -- [{"questionId": 1, "correct": true, "points": 1}, ...]
    results         jsonb,
    idempotency_key text CHECK (char_length(idempotency_key) <= 200),
    submitted_at    timestamptz NOT NULL DEFAULT now(),
    graded_at       timestamptz,
    PRIMARY KEY (submission_id, submitted_at),
    CHECK (status <> 'graded'
           OR (score IS NOT NULL AND max_score IS NOT NULL
               AND passed IS NOT NULL AND graded_at IS NOT NULL))
) PARTITION BY RANGE (submitted_at);

-- Review finding 2: by user, by quiz, by time; the first two carry the
-- keyset order (newest first) so each partition's scan stops early.
CREATE INDEX quiz_submissions_quiz_idx
    ON quiz_submissions (quiz_id, submitted_at, submission_id);
CREATE INDEX quiz_submissions_user_idx
    ON quiz_submissions (user_id, submitted_at, submission_id);
CREATE INDEX quiz_submissions_submitted_idx
    ON quiz_submissions (submitted_at);

CREATE TABLE submission_idempotency_keys (
    user_id         bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    idempotency_key text NOT NULL,
    quiz_id         bigint NOT NULL REFERENCES quizzes ON DELETE CASCADE,
    submission_id   bigint NOT NULL,
    submitted_at    timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);
-- purge of expired keys (they are only promised for a retry window)
CREATE INDEX submission_idempotency_keys_created_idx
    ON submission_idempotency_keys (created_at);

CREATE SCHEMA IF NOT EXISTS archive;
COMMENT ON SCHEMA archive IS
    'detached partitions past retention, waiting for export and DROP';

-- Creates the quarter containing `at` if missing; returns its name, or null
-- when it already existed.  Raises if a table of that name exists but is
-- not attached (e.g. a detached one was moved back by hand).
CREATE FUNCTION elearn_create_quiz_partition(at timestamptz)
RETURNS text
LANGUAGE plpgsql
SET search_path = public, pg_catalog
AS $$
DECLARE
    lo    timestamptz := date_trunc('quarter', at AT TIME ZONE 'UTC')
                         AT TIME ZONE 'UTC';
    hi    timestamptz := (date_trunc('quarter', at AT TIME ZONE 'UTC')
                          + interval '3 months') AT TIME ZONE 'UTC';
    pname text := format('quiz_submissions_%s_q%s',
                         to_char(at AT TIME ZONE 'UTC', 'YYYY'),
                         extract(quarter FROM at AT TIME ZONE 'UTC'));
    rel   regclass := to_regclass(format('public.%I', pname));
BEGIN
    IF rel IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_inherits
                        WHERE inhrelid = rel
                          AND inhparent = 'public.quiz_submissions'::regclass)
        THEN
            RAISE EXCEPTION 'table % exists but is not a partition of '
                            'quiz_submissions', pname;
        END IF;
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE public.%I PARTITION OF '
                   'public.quiz_submissions FOR VALUES FROM (%L) TO (%L)',
                   pname, lo, hi);
    RETURN pname;
END
$$;

-- The periodic job: see the top of this file.  `as_of` exists for tests
-- and for backfills; leave it at now() otherwise.  Returns one row per
-- action taken (none when everything was already in place).
-- lock_timeout: creating or detaching a partition needs a short exclusive
-- lock on quiz_submissions; better to fail this run and retry tomorrow than
-- to queue behind a long query while every submission queues behind us.
CREATE FUNCTION elearn_manage_quiz_partitions(
    ahead     integer DEFAULT 2,
    retention interval DEFAULT '2 years',
    as_of     timestamptz DEFAULT now())
RETURNS TABLE (action text, partition_name text,
               range_from timestamptz, range_to timestamptz)
LANGUAGE plpgsql
SET search_path = public, pg_catalog
SET lock_timeout = '10s'
SET datestyle = 'ISO, YMD'
AS $$
DECLARE
    i       integer;
    q       timestamp := date_trunc('quarter', as_of AT TIME ZONE 'UTC');
    created text;
    part    record;
    m       text[];
    cutoff  timestamptz := as_of - retention;
BEGIN
    IF ahead IS NULL OR ahead < 0 THEN
        RAISE EXCEPTION 'ahead must be >= 0, got %', ahead;
    END IF;
    IF retention IS NULL OR retention <= interval '0' THEN
        RAISE EXCEPTION 'retention must be positive, got %', retention;
    END IF;

    FOR i IN 0 .. ahead LOOP
        created := elearn_create_quiz_partition(
            (q + make_interval(months => 3 * i)) AT TIME ZONE 'UTC');
        IF created IS NOT NULL THEN
            action := 'created';
            partition_name := created;
            range_from := (q + make_interval(months => 3 * i))
                          AT TIME ZONE 'UTC';
            range_to := (q + make_interval(months => 3 * i + 3))
                        AT TIME ZONE 'UTC';
            RETURN NEXT;
        END IF;
    END LOOP;

    FOR part IN
        SELECT c.oid::regclass AS rel, c.relname,
               pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'public.quiz_submissions'::regclass
         ORDER BY c.relname
    LOOP
        -- MINVALUE/MAXVALUE bounds are unquoted and never match: a
        -- hand-made open-ended partition is never detached.
        m := regexp_match(part.bound,
                          '^FOR VALUES FROM \(''([^'']+)''\) TO \(''([^'']+)''\)$');
        CONTINUE WHEN m IS NULL;
        CONTINUE WHEN m[2]::timestamptz > cutoff;
        IF to_regclass(format('archive.%I', part.relname)) IS NOT NULL THEN
            RAISE EXCEPTION 'cannot archive %: archive.% already exists',
                part.relname, part.relname;
        END IF;
        EXECUTE format('ALTER TABLE public.quiz_submissions '
                       'DETACH PARTITION %s', part.rel);
        EXECUTE format('ALTER TABLE %s SET SCHEMA archive', part.rel);
        action := 'detached';
        partition_name := part.relname;
        range_from := m[1]::timestamptz;
        range_to := m[2]::timestamptz;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION elearn_manage_quiz_partitions(integer, interval,
                                                  timestamptz) IS
    'creates the current and the next `ahead` quarterly partitions of '
    'quiz_submissions; detaches those older than `retention` into archive';

SELECT * FROM elearn_manage_quiz_partitions();
