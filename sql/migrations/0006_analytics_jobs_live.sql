-- Tables the daemons own: the analytics summary (review finding 4: one
-- row per course kept current by the analytics consumer from Kafka events,
-- so the dashboard is one indexed join, never N+1 aggregates), transcode
-- jobs, live sessions, and the processed-event ledger that makes every
-- consumer idempotent (exact counts: each event counted once).

CREATE TABLE course_analytics_summary (
    course_id             bigint PRIMARY KEY
                          REFERENCES courses ON DELETE CASCADE,
    enrollment_count      integer NOT NULL DEFAULT 0,
    active_learners       integer NOT NULL DEFAULT 0,
    completion_count      integer NOT NULL DEFAULT 0,
    -- sum of each graded submission's score in percent of its max_score,
    -- so averageScore = total_quiz_score / quiz_submission_count (percent)
    total_quiz_score      numeric(14,2) NOT NULL DEFAULT 0,
    quiz_submission_count integer NOT NULL DEFAULT 0,
    -- submissions per score decile: [0,10), [10,20) ... [90,100]
    score_histogram       integer[] NOT NULL
                          DEFAULT '{0,0,0,0,0,0,0,0,0,0}'
                          CHECK (cardinality(score_histogram) = 10),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (enrollment_count >= 0 AND active_learners >= 0
           AND completion_count >= 0 AND quiz_submission_count >= 0)
);

CREATE TABLE transcode_jobs (
    job_id           bigserial PRIMARY KEY,
    video_id         bigint NOT NULL REFERENCES videos ON DELETE CASCADE,
    priority         text NOT NULL DEFAULT 'normal'
                     CHECK (priority IN ('normal', 'high')),
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'processing', 'ready',
                                       'failed')),
    progress_percent smallint NOT NULL DEFAULT 0
                     CHECK (progress_percent BETWEEN 0 AND 100),
    error            text,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    queued_at        timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE INDEX transcode_jobs_video_idx ON transcode_jobs (video_id, job_id);
-- queuePosition: count of queued jobs ahead of this one; small because
-- only queued jobs are in it.
CREATE INDEX transcode_jobs_queue_idx ON transcode_jobs (priority, queued_at,
                                                         job_id)
    WHERE status = 'queued';

CREATE TABLE live_sessions (
    session_id bigserial PRIMARY KEY,
    course_id  bigint NOT NULL REFERENCES courses ON DELETE CASCADE,
    title      text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    capacity   integer NOT NULL CHECK (capacity > 0),
    status     text NOT NULL DEFAULT 'open'
               CHECK (status IN ('open', 'closed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
CREATE INDEX live_sessions_course_idx ON live_sessions (course_id, session_id);

CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
-- purge of entries older than Kafka's retention (a replay cannot reach
-- further back than that)
CREATE INDEX processed_events_processed_idx ON processed_events (processed_at);
