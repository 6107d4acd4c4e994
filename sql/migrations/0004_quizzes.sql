-- Quizzes and their questions.  A question's `answer` is never sent to
-- learners (GET /quizzes/{id} selects the other columns); grading
-- parameters live in it: {"correct": ...} plus per-type options, e.g.
-- numeric {"value": 3.14, "tolerance": 0.01, "toleranceType": "absolute"},
-- short {"accepted": ["..."], "caseSensitive": false} or {"pattern": "..."}.

CREATE TABLE quizzes (
    quiz_id       bigserial PRIMARY KEY,
    course_id     bigint NOT NULL REFERENCES courses ON DELETE CASCADE,
    title         text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    -- percent of max_score needed to pass
    passing_score numeric(5,2) NOT NULL DEFAULT 70
                  CHECK (passing_score BETWEEN 0 AND 100),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quizzes_course_idx ON quizzes (course_id, quiz_id);
COMMENT ON COLUMN quizzes.passing_score IS
    'percentage (0-100) of the maximum score needed to pass';

CREATE TABLE questions (
    question_id bigserial PRIMARY KEY,
    quiz_id     bigint NOT NULL REFERENCES quizzes ON DELETE CASCADE,
    position    integer NOT NULL DEFAULT 0,
    type        text NOT NULL
                CHECK (type IN ('single', 'multiple', 'truefalse', 'numeric',
                                'short', 'essay')),
    prompt      text NOT NULL CHECK (char_length(prompt) BETWEEN 1 AND 4000),
    -- [{"id": "a", "text": "..."}, ...] for single/multiple, else null
    options     jsonb,
    answer      jsonb,   -- null only for essay (graded by hand)
    points      numeric(6,2) NOT NULL DEFAULT 1 CHECK (points >= 0),
    CHECK (type = 'essay' OR answer IS NOT NULL),
    CHECK (type NOT IN ('single', 'multiple')
           OR jsonb_typeof(options) = 'array')
);
-- Questions of a quiz in order; also the question count.
CREATE INDEX questions_quiz_idx ON questions (quiz_id, position, question_id);
