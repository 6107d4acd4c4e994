-- Videos of a course and each learner's progress through them.
--
-- video_progress is the hottest table for writes (a report every ~30 s per
-- watching learner, review finding 3): one row per (user_id, video_id),
-- upserted with ON CONFLICT.  `watched` is the union of the played
-- intervals as an int4multirange, so replaying a part never counts twice
-- and skipping ahead never completes a video; watched_seconds is derived
-- from it by the database, so the two can never disagree.
-- It is kept HOT-updatable on purpose: fillfactor leaves room on the page,
-- and no index covers a column an upsert changes (no index on updated_at,
-- although review finding 2 proposed one: it would turn every progress
-- report into writes to every index; its partial form with now() is not
-- even legal).  "Recently active" questions are answered by the analytics
-- summary, which the events keep fresh.

CREATE TABLE videos (
    video_id         bigserial PRIMARY KEY,
    course_id        bigint NOT NULL REFERENCES courses ON DELETE CASCADE,
    title            text NOT NULL
                     CHECK (char_length(title) BETWEEN 1 AND 200),
    position         integer NOT NULL DEFAULT 0,
    duration_seconds integer CHECK (duration_seconds >= 0),
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'processing', 'ready',
                                       'failed')),
    -- [{"height": 720, "bandwidth": 2800000}, ...] once transcoded
    renditions       jsonb NOT NULL DEFAULT '[]'
                     CHECK (jsonb_typeof(renditions) = 'array'),
    source_path      text,   -- the uploaded original, for the transcoder
    hls_path         text,   -- master playlist, relative to the HLS root
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- Review finding 2 (video_metadata by course), in the order pages list them.
CREATE INDEX videos_course_idx ON videos (course_id, position, video_id);

CREATE TRIGGER videos_touch_updated_at BEFORE UPDATE ON videos
    FOR EACH ROW EXECUTE FUNCTION elearn_touch_updated_at();

-- Seconds covered by a multirange of whole seconds ([from, to) ranges).
CREATE FUNCTION elearn_int4multirange_length(m int4multirange)
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT coalesce(sum(upper(r) - lower(r)), 0)::integer
          FROM unnest(m) AS r
         WHERE NOT upper_inf(r) AND NOT lower_inf(r));

CREATE TABLE video_progress (
    user_id          bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    video_id         bigint NOT NULL REFERENCES videos ON DELETE CASCADE,
    position_seconds integer NOT NULL DEFAULT 0
                     CHECK (position_seconds >= 0),
    watched          int4multirange NOT NULL DEFAULT '{}'
                     CHECK (isempty(watched)
                            OR (lower(watched) >= 0
                                AND NOT upper_inf(watched))),
    watched_seconds  integer NOT NULL
                     GENERATED ALWAYS AS
                     (elearn_int4multirange_length(watched)) STORED,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- review finding 2's unique (user_id, video_id): the upsert target
    PRIMARY KEY (user_id, video_id)
) WITH (fillfactor = 80);
-- ON DELETE CASCADE from videos, and per-video aggregates; video_id never
-- changes, so this index does not cost the upsert its HOT update.
CREATE INDEX video_progress_video_idx ON video_progress (video_id);
