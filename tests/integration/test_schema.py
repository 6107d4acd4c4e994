"""The database layer: indexes behind every named query, quarterly
partitions, the answers size limit, the migration runner and the demo data.

Runs against the migrated test database with the FULL demo data loaded
(fixture `pg_dsn` from conftest.py).  Every test leaves the database as it
found it: DDL and DML run in a transaction that is rolled back, and the one
test that must commit (the migration runner reads from its own connection)
restores what it changed in a `finally`.
"""

import ctypes
import datetime as dt
import importlib.util
import json
import os
import re
import subprocess
import uuid

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
QUERIES_SQL = os.path.join(TOP, "sql", "queries.sql")
API_SQL = os.path.join(TOP, "sql", "api.sql")
# the module's statements: sql/api.sql and one sql/api-<capability>.sql
# per capability
API_SQL_FILES = sorted(
    os.path.join(TOP, "sql", f) for f in os.listdir(os.path.join(TOP, "sql"))
    if re.match(r"api(-[a-z]+)?\.sql$", f))
MIGRATE = os.path.join(TOP, "sql", "migrate.sh")

# Tables a sequential scan must never read through on a hot path; any
# other table with at least LARGE_ROWS rows counts as large too, and so does
# a quiz_submissions partition with at least PARTITION_ROWS (an empty future
# partition is not).
LARGE_TABLES = {"courses", "users", "enrollments", "videos",
                "video_progress", "quizzes", "questions",
                "course_analytics_summary", "transcode_jobs"}
LARGE_ROWS = 10000
PARTITION_ROWS = 1000


# --- helpers -----------------------------------------------------------------

def parse_named(path):
    """{name: (sql, [params, ...])} from the `-- name:` blocks of a file.
    A `-- params: <JSON list>` comment line in a block is one set of
    example parameters for the plan check (repeatable)."""
    queries, name, buf, params = {}, None, [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"--\s*name:\s*([a-z0-9_]+)\s*$", line)
            if m:
                assert name is None, "%s has no terminating ';'" % name
                name, buf, params = m.group(1), [], []
                assert name not in queries, "duplicate query name %s" % name
                continue
            if name is None:
                continue
            m = re.match(r"--\s*params:\s*(.*)$", line)
            if m:
                params.append(json.loads(m.group(1)))
                continue
            if line.lstrip().startswith("--"):
                continue
            buf.append(line)
            if line.rstrip().endswith(";"):
                queries[name] = ("".join(buf).strip().rstrip(";"), params)
                name = None
    assert name is None, "%s has no terminating ';'" % name
    return queries


def parse_queries(path=QUERIES_SQL):
    """{name: sql} of sql/queries.sql."""
    return {k: v[0] for k, v in parse_named(path).items()}


def all_named_statements():
    """Every named statement of sql/queries.sql and sql/api.sql (the
    module's own, when present), with the example parameters written
    beside it."""
    out = {}
    for path in [QUERIES_SQL] + API_SQL_FILES:
        if not os.path.exists(path):
            continue
        for name, v in parse_named(path).items():
            assert name not in out, "%s named in two files" % name
            out[name] = v
    return out


def to_pyformat(sql):
    """$n parameters to psycopg2's %(pn)s (literal % doubled)."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql.replace("%", "%%"))


def bind(params):
    return {"p%d" % (i + 1): v for i, v in enumerate(params)}


def plan_of(cur, sql, params):
    """The executed plan (EXPLAIN ANALYZE: actual row counts), with the
    plans of the statements that functions ran inside it (auto_explain's
    nested statements, sent back as notices) as more children of its
    root, so that a statement moved into a PL/pgSQL function is checked
    as closely as one written out.  Writes are executed too, inside the
    caller's rolled-back transaction."""
    cur.execute("SAVEPOINT plan")
    cur.execute("LOAD 'auto_explain'")
    for name, value in (("log_min_duration", "0"), ("log_analyze", "on"),
                        ("log_nested_statements", "on"),
                        ("log_format", "json"), ("log_level", "notice")):
        cur.execute("SET LOCAL auto_explain.%s = %s" % (name, value))
    del cur.connection.notices[:]
    cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + to_pyformat(sql),
                bind(params))
    plan = cur.fetchone()[0][0]["Plan"]
    # auto_explain also reports the EXPLAINed statement itself: left out
    logged = [json.loads(n.split("plan:", 1)[1])
              for n in cur.connection.notices if "plan:" in n]
    nested = [e["Plan"] for e in logged
              if not e.get("Query Text", "").lstrip().startswith("EXPLAIN")]
    cur.execute("ROLLBACK TO SAVEPOINT plan")
    return {"Node Type": "Statement and nested statements",
            "Plans": [plan] + nested}


def relation_rows(cur):
    cur.execute("SELECT relname, reltuples FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = 'public'::regnamespace")
    return dict(cur.fetchall())


def is_large(rel, rows):
    n = rows.get(rel, 0)
    if rel.startswith("quiz_submissions_"):
        return n >= PARTITION_ROWS
    return rel in LARGE_TABLES or n >= LARGE_ROWS


def seq_scans_on_large(plan, rows):
    """Large relations a Seq Scan read through.  The one tolerated form is
    an early stop under a LIMIT (a common search term: the planner rightly
    reads the first few thousand rows instead of building a bitmap of
    tens of thousands), and only when it really stopped early: it read
    less than half of the table."""
    found = []

    def walk(node, limited):
        if node.get("Node Type") == "Seq Scan":
            rel = node.get("Relation Name", "")
            if is_large(rel, rows):
                read = (node.get("Actual Rows", 0)
                        + node.get("Rows Removed by Filter", 0)) \
                    * node.get("Actual Loops", 1)
                if not (limited and read < 0.5 * rows.get(rel, 0)):
                    found.append(rel)
        limited = limited or node.get("Node Type") == "Limit"
        for child in node.get("Plans", []):
            walk(child, limited)
    walk(plan, False)
    return found


@pytest.fixture(scope="module")
def conn(pg_dsn):
    c = psycopg2.connect(pg_dsn)
    c.autocommit = False
    yield c
    c.rollback()
    c.close()


@pytest.fixture
def cur(conn):
    """A cursor in a transaction that is always rolled back."""
    cur = conn.cursor()
    cur.execute("SET LOCAL TIME ZONE 'UTC'")
    yield cur
    conn.rollback()


@pytest.fixture(scope="module")
def sample(pg_dsn):
    """Realistic parameters taken from the loaded data: the heaviest user,
    course, quiz and instructor, so the plans are the expensive ones."""
    c = psycopg2.connect(pg_dsn)
    try:
        k = c.cursor()
        s = {}
        k.execute("SELECT user_id, count(*) FROM enrollments "
                  "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1")
        s["user"] = k.fetchone()[0]
        k.execute("SELECT course_id FROM courses WHERE published "
                  "ORDER BY enrollment_count DESC, course_id LIMIT 1")
        s["popular_course"] = k.fetchone()[0]
        k.execute("SELECT instructor_id FROM courses GROUP BY 1 "
                  "ORDER BY count(*) DESC, 1 LIMIT 1")
        s["instructor"] = k.fetchone()[0]
        k.execute("SELECT quiz_id FROM quiz_submissions GROUP BY 1 "
                  "ORDER BY count(*) DESC, 1 LIMIT 1")
        s["quiz"] = k.fetchone()[0]
        k.execute("SELECT user_id FROM quiz_submissions GROUP BY 1 "
                  "ORDER BY count(*) DESC, 1 LIMIT 1")
        s["submitter"] = k.fetchone()[0]
        k.execute("SELECT submission_id FROM quiz_submissions "
                  "ORDER BY submitted_at LIMIT 1")
        s["submission"] = k.fetchone()[0]
        k.execute("SELECT user_id, video_id FROM video_progress "
                  "ORDER BY user_id, video_id LIMIT 1")
        s["progress"] = k.fetchone()
        k.execute("SELECT (extract(epoch FROM published_at) * 1000000)"
                  "::bigint, course_id FROM courses "
                  "WHERE published ORDER BY published_at DESC, course_id "
                  "DESC OFFSET 5000 LIMIT 1")
        s["newest_cursor"] = k.fetchone()
        k.execute("SELECT enrollment_count, course_id FROM courses "
                  "WHERE published ORDER BY enrollment_count DESC, "
                  "course_id DESC OFFSET 5000 LIMIT 1")
        s["popular_cursor"] = k.fetchone()
        k.execute("SELECT enrolled_at, course_id FROM enrollments "
                  "WHERE user_id = %s ORDER BY 1 DESC, 2 DESC LIMIT 1",
                  (s["user"],))
        s["user_cursor"] = k.fetchone()
        k.execute("SELECT enrolled_at, user_id FROM enrollments "
                  "WHERE course_id = %s ORDER BY 1 DESC, 2 DESC "
                  "OFFSET 10 LIMIT 1", (s["popular_course"],))
        s["course_cursor"] = k.fetchone()
        k.execute("SELECT submitted_at, submission_id FROM quiz_submissions "
                  "WHERE quiz_id = %s ORDER BY 1 DESC, 2 DESC OFFSET 5 "
                  "LIMIT 1", (s["quiz"],))
        s["quiz_cursor"] = k.fetchone()
        return s
    finally:
        c.close()


def hot_query_params(s):
    """Parameters for every named query; several variants where filters or
    cursors change the plan.  A query missing here fails the test, so each
    new named query gets a plan check."""
    nc, pc = s["newest_cursor"], s["popular_cursor"]
    return {
        "user_by_email": [["Student@Elearn.dev"]],
        "course_get": [[1]],
        "course_get_json": [[1, False], [s["popular_course"], True]],
        "course_videos": [[1], [s["popular_course"]]],
        "course_quizzes": [[1]],
        "search_relevance": [
            ["python", None, None, None, 1000, None, None, 21, 0],
            ["learn", None, None, None, 1000, None, None, 21, 0],
            ["practical", None, None, None, 1000, None, None, 21, 980],
            ["machine learning -deep", "data-science", "beginner", "en",
             1000, 0.5, 50000, 21, 0],
        ],
        "search_newest": [
            ["python", None, None, None, None, None, 21, 0],
            ["course", None, None, None, nc[0], nc[1], 21, 0],
            ["kubernetes", "devops", None, "de", None, None, 21, 0],
        ],
        "search_popular": [
            ["python", None, None, None, None, None, 21, 0],
            ["course", None, None, None, pc[0], pc[1], 21, 0],
            ["\"design systems\"", "design", "advanced", None, None, None,
             21, 0],
        ],
        "browse_newest": [
            [None, None, None, None, None, 21, 0],
            [None, None, None, nc[0], nc[1], 21, 0],
            ["music", None, None, None, None, 21, 0],
            ["science", "advanced", "ja", None, None, 21, 0],
            [None, None, None, None, None, 21, 9980],
        ],
        "browse_popular": [
            [None, None, None, None, None, 21, 0],
            [None, None, None, pc[0], pc[1], 21, 0],
            [None, "intermediate", "es", None, None, 21, 0],
        ],
        "search_facets": [
            ["python", None, None, None, 10000, 1000],
            ["learn", None, None, None, 10000, 1000],
            ["learn", None, None, None, 10000, 0],
            [None, None, None, None, 10000, 0],
            [None, "business", None, None, 10000, 0],
        ],
        "suggest": [["intro"], ["Mastering Py"], ["100%_"]],
        "enrollment_exists": [[s["user"], s["popular_course"]]],
        "enroll": [[1, 1]],
        "unenroll": [[1, 2]],
        "enrollments_of_user": [
            [s["user"], None, None, 20, 0],
            [s["user"], s["user_cursor"][0], s["user_cursor"][1], 20, 0],
        ],
        "enrollments_of_course": [
            [s["popular_course"], None, None, 20, 0],
            [s["popular_course"], s["course_cursor"][0],
             s["course_cursor"][1], 20, 0],
        ],
        "progress_get": [list(s["progress"])],
        "progress_upsert": [[s["progress"][0], s["progress"][1], 95,
                             "{[0,30),[60,95)}", 0.9]],
        "quiz_submissions_of_quiz": [
            [s["quiz"], None, None, 20, 0],
            [s["quiz"], s["quiz_cursor"][0], s["quiz_cursor"][1], 20, 0],
        ],
        "quiz_submissions_of_user": [
            [s["submitter"], None, None, None, 20],
            [s["submitter"], s["quiz"], None, None, 20],
        ],
        "submission_get": [[s["submission"]]],
        "analytics_of_instructor": [[s["instructor"]], [2]],
    }


# --- (a) every named query is served by an index ---------------------------

def test_queries_file_parses():
    q = {k: v[0] for k, v in all_named_statements().items()}
    for name in ("course_get", "course_videos", "course_quizzes",
                 "search_relevance", "search_newest", "search_popular",
                 "browse_newest", "suggest", "enrollments_of_user",
                 "enrollments_of_course", "progress_get",
                 "quiz_submissions_of_quiz", "quiz_submissions_of_user",
                 "analytics_of_instructor"):
        assert name in q, name
    for name, sql in q.items():
        assert ";" not in sql, "%s holds more than one statement" % name


def test_data_is_large_enough_for_plans_to_mean_something(cur):
    cur.execute("SELECT count(*) FROM courses")
    assert cur.fetchone()[0] >= 50000, "load the FULL demo data"


def test_no_seq_scan_on_large_tables(cur, sample):
    """Every named statement (sql/queries.sql and the module's sql/api.sql)
    with realistic parameters: from hot_query_params, else from the
    `-- params:` lines beside it.  One with neither fails: each new
    statement gets a plan check."""
    queries = all_named_statements()
    params = hot_query_params(sample)
    missing = sorted(n for n, (_, fp) in queries.items()
                     if not params.get(n) and not fp)
    assert not missing, "named statements without parameters for the " \
        "plan check (add a `-- params: [...]` line): %s" % missing
    rows = relation_rows(cur)
    bad = []
    for name, (sql, file_params) in queries.items():
        for p in params.get(name) or file_params:
            scans = seq_scans_on_large(plan_of(cur, sql, p), rows)
            if scans:
                bad.append("%s %r: Seq Scan on %s" % (name, p, scans))
    assert not bad, "\n".join(bad)


def test_checker_flags_a_missing_index(cur, sample):
    """The plan check can fail: without videos_course_idx, course_videos
    must read videos sequentially, and the checker must say so."""
    sql = parse_queries()["course_videos"]
    rows = relation_rows(cur)
    assert seq_scans_on_large(plan_of(cur, sql, [1]), rows) == []
    cur.execute("DROP INDEX videos_course_idx")
    assert seq_scans_on_large(plan_of(cur, sql, [1]), rows) == ["videos"]


def test_checker_sees_inside_functions(cur, sample):
    """search_facets runs its statement inside elearn_search_facets():
    the check reads the plans of the statements the function ran, so
    without search_term_counts_pkey a one-word query's counts must read
    search_term_counts sequentially, and the checker must say so."""
    sql = parse_named(API_SQL)["search_facets"][0]
    p = ["python", None, None, None, 10000, 1000]
    rows = relation_rows(cur)
    assert seq_scans_on_large(plan_of(cur, sql, p), rows) == []
    cur.execute("ALTER TABLE search_term_counts "
                "DROP CONSTRAINT search_term_counts_pkey")
    assert seq_scans_on_large(plan_of(cur, sql, p), rows) == \
        ["search_term_counts"]


def test_checker_flags_a_full_read_under_a_limit(cur, sample):
    """A LIMIT does not excuse a scan that reads the whole table: without
    enrollments_course_idx a course's page of enrollments must sort them
    all."""
    sql = parse_queries()["enrollments_of_course"]
    p = [sample["popular_course"], None, None, 20, 0]
    rows = relation_rows(cur)
    assert seq_scans_on_large(plan_of(cur, sql, p), rows) == []
    cur.execute("DROP INDEX enrollments_course_idx")
    assert seq_scans_on_large(plan_of(cur, sql, p), rows) == ["enrollments"]
    # and the rule itself, on a made-up plan
    fake = {"Node Type": "Limit", "Plans": [{
        "Node Type": "Seq Scan", "Relation Name": "courses",
        "Actual Rows": 20, "Rows Removed by Filter": 99000,
        "Actual Loops": 1}]}
    assert seq_scans_on_large(fake, {"courses": 100000}) == ["courses"]
    fake["Plans"][0]["Rows Removed by Filter"] = 2000
    assert seq_scans_on_large(fake, {"courses": 100000}) == []
    fake["Node Type"] = "Sort"
    assert seq_scans_on_large(fake, {"courses": 100000}) == ["courses"]


def test_named_queries_run(cur, sample):
    """Every statement executes with realistic parameters (writes are
    rolled back), and a few answers are checked for sense."""
    queries = {k: v[0] for k, v in all_named_statements().items()}
    params = hot_query_params(sample)
    for name, sql in queries.items():
        for p in params.get(name) or all_named_statements()[name][1]:
            cur.execute("SAVEPOINT q")
            cur.execute(to_pyformat(sql), bind(p))
            cur.execute("ROLLBACK TO SAVEPOINT q")
    cur.execute(to_pyformat(queries["user_by_email"]),
                bind(["STUDENT@elearn.dev"]))
    assert cur.fetchone()[0] == 1
    cur.execute(to_pyformat(queries["suggest"]), bind(["introduction to"]))
    rows = json.loads(cur.fetchone()[0])
    assert 1 <= len(rows) <= 8
    assert all(r["title"].lower().startswith("introduction to")
               for r in rows)
    cur.execute(to_pyformat(queries["suggest"]), bind(["%"]))
    assert json.loads(cur.fetchone()[0]) == []     # a wildcard is a literal character
    cur.execute(to_pyformat(queries["search_relevance"]),
                bind(["python", None, None, None, 1000, None, None, 20, 0]))
    ranks = [float(r[1]) for r in cur.fetchall()]
    assert ranks and ranks == sorted(ranks, reverse=True)


def test_search_keyset_pages_do_not_overlap(cur):
    sql = to_pyformat(parse_named(API_SQL)["browse_newest"][0])
    cur.execute(sql, bind([None, None, None, None, None, 50, 0]))
    first = cur.fetchall()
    last = first[-1]
    cur.execute(sql, bind([None, None, None, int(last[1]), last[2], 50,
                           0]))
    second = cur.fetchall()
    cur.execute(sql, bind([None, None, None, None, None, 100, 0]))
    assert first + second == cur.fetchall()


def test_progress_upsert_counts_the_union_and_needs_coverage(cur):
    q = parse_queries()
    up = to_pyformat(q["progress_upsert"])
    cur.execute("SELECT video_id, duration_seconds FROM videos "
                "WHERE course_id = 1 AND status = 'ready' "
                "ORDER BY position LIMIT 1")
    video, dur = cur.fetchone()
    cur.execute("DELETE FROM video_progress WHERE user_id = 1 "
                "AND video_id = %s", (video,))
    # skipping to the end does not complete the video
    cur.execute(up, bind([1, video, dur, "{[%d,%d)}" % (dur - 20, dur + 50),
                          0.9]))
    _, pos, watched, completed, newly, _ = cur.fetchone()
    assert (pos, watched, completed, newly) == (dur, 20, None, None)
    # replaying the same part counts once
    cur.execute(up, bind([1, video, dur, "{[%d,%d)}" % (dur - 20, dur), 0.9]))
    assert cur.fetchone()[2] == 20
    # covering 90% completes it, once
    cur.execute(up, bind([1, video, 10, "{[0,%d)}" % (dur * 9 // 10 + 1),
                          0.9]))
    _, _, watched, completed, newly, _ = cur.fetchone()
    assert completed is not None and newly is True
    cur.execute(up, bind([1, video, 10, "{[0,5)}", 0.9]))
    assert cur.fetchone()[4] is False


# --- (b) quarterly partitions ----------------------------------------------

def quarter_start(t):
    return dt.datetime(t.year, 3 * ((t.month - 1) // 3) + 1, 1,
                       tzinfo=dt.timezone.utc)


def add_quarters(t, n):
    m = t.month - 1 + 3 * n
    return t.replace(year=t.year + m // 12, month=m % 12 + 1)


def attached_partitions(cur):
    cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'quiz_submissions'::regclass")
    return dict(cur.fetchall())


def bound(lo, hi):
    f = "%Y-%m-%d %H:%M:%S+00"
    return "FOR VALUES FROM ('%s') TO ('%s')" % (lo.strftime(f),
                                                 hi.strftime(f))


def test_partitions_created_ahead(cur):
    cur.execute("SELECT now()")
    q0 = quarter_start(cur.fetchone()[0].astimezone(dt.timezone.utc))
    cur.execute("SELECT * FROM elearn_manage_quiz_partitions(ahead => 4)")
    parts = attached_partitions(cur)
    for i in range(5):
        lo, hi = add_quarters(q0, i), add_quarters(q0, i + 1)
        name = "quiz_submissions_%d_q%d" % (lo.year, (lo.month - 1) // 3 + 1)
        assert parts.get(name) == bound(lo, hi), name
    # idempotent: a second run has nothing to do
    cur.execute("SELECT * FROM elearn_manage_quiz_partitions(ahead => 4)")
    assert cur.fetchall() == []
    # no DEFAULT partition, by design (see 0005_quiz_submissions.sql)
    cur.execute("SELECT count(*) FROM pg_class c JOIN pg_inherits i "
                "ON i.inhrelid = c.oid WHERE i.inhparent = "
                "'quiz_submissions'::regclass AND "
                "pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'")
    assert cur.fetchone()[0] == 0


def test_partitions_past_retention_are_detached_to_archive(cur):
    # a 2020 Q1 partition, as the function made it back then
    cur.execute("SELECT * FROM elearn_manage_quiz_partitions(0, '2 years', "
                "'2020-02-15 12:00+00')")
    assert cur.fetchall() == [(
        "created", "quiz_submissions_2020_q1",
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2020, 4, 1, tzinfo=dt.timezone.utc))]
    cur.execute("INSERT INTO quiz_submissions (quiz_id, user_id, answers, "
                "submitted_at) VALUES (1, 1, '{}', '2020-03-01+00') "
                "RETURNING submission_id")
    sid = cur.fetchone()[0]

    cur.execute("SELECT action, partition_name FROM "
                "elearn_manage_quiz_partitions()")
    assert ("detached", "quiz_submissions_2020_q1") in cur.fetchall()
    assert "quiz_submissions_2020_q1" not in attached_partitions(cur)
    # kept for archiving, not dropped, rows intact
    cur.execute("SELECT submission_id FROM archive.quiz_submissions_2020_q1")
    assert cur.fetchall() == [(sid,)]
    cur.execute("SELECT count(*) FROM quiz_submissions "
                "WHERE submission_id = %s", (sid,))
    assert cur.fetchone()[0] == 0
    # recent partitions stay attached
    cur.execute("SELECT now()")
    q0 = quarter_start(cur.fetchone()[0].astimezone(dt.timezone.utc))
    assert "quiz_submissions_%d_q%d" % (q0.year, (q0.month - 1) // 3 + 1) \
        in attached_partitions(cur)
    # and nothing accepts 2020 rows any more: no DEFAULT partition
    cur.execute("SAVEPOINT s")
    with pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute("INSERT INTO quiz_submissions (quiz_id, user_id, "
                    "answers, submitted_at) VALUES (1, 1, '{}', "
                    "'2020-03-01+00')")
    cur.execute("ROLLBACK TO SAVEPOINT s")


# --- (c) answers size limit ------------------------------------------------

def answers_of_size(n, ch="x"):
    """A JSON object whose canonical jsonb text is exactly n bytes."""
    head = '{"1": "'
    tail = '"}'
    k = (n - len(head) - len(tail)) // len(ch.encode())
    s = head + ch * k + tail
    assert len(s.encode()) == n
    return s


@pytest.mark.parametrize("size,ok", [(10240, True), (10241, False),
                                     (20000, False), (50, True)])
def test_answers_size_limit(cur, size, ok):
    a = answers_of_size(size)
    cur.execute("SELECT octet_length(%s::jsonb::text)", (a,))
    assert cur.fetchone()[0] == size
    cur.execute("SAVEPOINT s")
    sql = ("INSERT INTO quiz_submissions (quiz_id, user_id, answers) "
           "VALUES (1, 1, %s)")
    if ok:
        cur.execute(sql, (a,))
    else:
        with pytest.raises(psycopg2.errors.CheckViolation) as e:
            cur.execute(sql, (a,))
        assert e.value.diag.constraint_name == \
            "quiz_submissions_answers_size"
    cur.execute("ROLLBACK TO SAVEPOINT s")


def test_answers_size_counts_bytes_not_characters(cur):
    a = answers_of_size(10243, "é")      # 5,117 characters, 10,243 bytes
    with pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute("INSERT INTO quiz_submissions (quiz_id, user_id, "
                    "answers) VALUES (1, 1, %s)", (a,))


# --- (d) the migration runner ----------------------------------------------

def run_migrate(dsn):
    return subprocess.run([MIGRATE, dsn], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))


def migrations_state(dsn):
    c = psycopg2.connect(dsn)
    try:
        k = c.cursor()
        k.execute("SELECT version, name, checksum, applied_at "
                  "FROM schema_migrations ORDER BY version")
        return k.fetchall()
    finally:
        c.close()


def test_migrate_is_idempotent(pg_dsn):
    before = migrations_state(pg_dsn)
    files = [f for f in os.listdir(os.path.join(TOP, "sql", "migrations"))
             if f.endswith(".sql")]
    assert len(before) == len(files)
    for _ in range(2):
        r = run_migrate(pg_dsn)
        assert r.returncode == 0, r.stderr
        assert "nothing to do" in r.stderr
        assert "applying" not in r.stderr
    assert migrations_state(pg_dsn) == before


def test_migrate_refuses_an_edited_migration(pg_dsn):
    c = psycopg2.connect(pg_dsn)
    c.autocommit = True
    k = c.cursor()
    k.execute("SELECT checksum FROM schema_migrations WHERE version = 1")
    original = k.fetchone()[0]
    try:
        k.execute("UPDATE schema_migrations SET checksum = %s "
                  "WHERE version = 1", ("0" * 64,))
        r = run_migrate(pg_dsn)
        assert r.returncode != 0
        assert "0001_users.sql was changed after it was applied" in r.stderr
        assert "applying" not in r.stderr
    finally:
        k.execute("UPDATE schema_migrations SET checksum = %s "
                  "WHERE version = 1", (original,))
        c.close()
    assert run_migrate(pg_dsn).returncode == 0


def test_migrate_fresh_database_with_racing_runners(pg_dsn):
    """Two runners at once on an empty database: every migration applied
    exactly once, then a third run has nothing to do."""
    c = psycopg2.connect(pg_dsn)
    c.autocommit = True
    k = c.cursor()
    k.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles "
              "WHERE rolname = current_user")
    # the test stack's role owns its cluster
    assert k.fetchone()[0], "the test role must be able to create databases"
    db = "elearn_migrate_%s" % uuid.uuid4().hex[:12]
    k.execute('CREATE DATABASE "%s"' % db)
    try:
        opts = psycopg2.extensions.parse_dsn(pg_dsn)
        opts["dbname"] = db
        dsn = psycopg2.extensions.make_dsn(**opts)
        procs = [subprocess.Popen([MIGRATE, dsn], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ)) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err
        state = migrations_state(dsn)
        assert [v for v, *_ in state] == sorted({v for v, *_ in state})
        assert len(state) == len(migrations_state(pg_dsn))
        r = run_migrate(dsn)
        assert r.returncode == 0 and "nothing to do" in r.stderr
    finally:
        k.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db)
        c.close()


# --- (e) demo data ---------------------------------------------------------

def demo_module():
    spec = importlib.util.spec_from_file_location(
        "demo_data", os.path.join(TOP, "tools", "demo-data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PHC = re.compile(r"^\$argon2id\$v=19\$m=19456,t=2,p=1\$"
                 r"([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


@pytest.mark.parametrize("email,password,role", [
    ("student@elearn.dev", "student-dev-pass", "student"),
    ("instructor@elearn.dev", "instructor-dev-pass", "instructor"),
    ("admin@elearn.dev", "admin-dev-pass", "admin"),
])
def test_dev_accounts(cur, email, password, role):
    cur.execute("SELECT role, password_hash FROM users "
                "WHERE lower(email) = %s", (email,))
    got_role, h = cur.fetchone()
    assert got_role == role
    m = PHC.match(h)
    assert m, h
    # libargon2's own verify (ctypes), as the module does
    lib = ctypes.CDLL("libargon2.so.1")
    pw = password.encode()
    assert lib.argon2id_verify(h.encode(), pw, ctypes.c_size_t(len(pw))) == 0
    assert lib.argon2id_verify(h.encode(), b"wrong", ctypes.c_size_t(5)) != 0


def test_demo_data_counts(cur):
    profiles = demo_module().PROFILES
    # accounts other tests register (@test.elearn.dev) are not demo data
    cur.execute("SELECT (SELECT count(*) FROM users "
                "         WHERE email NOT LIKE '%%@test.elearn.dev'), "
                "(SELECT count(*) FROM courses), "
                "(SELECT count(*) FROM courses WHERE published), "
                "(SELECT count(*) FROM videos), "
                "(SELECT count(*) FROM enrollments), "
                "(SELECT coalesce(sum(enrollment_count), 0) FROM courses), "
                "(SELECT count(DISTINCT language) FROM courses), "
                "(SELECT count(DISTINCT category) FROM courses), "
                "(SELECT count(DISTINCT title) FROM courses)")
    users, courses, published, videos, enr, enr_sum, langs, cats, titles = \
        cur.fetchone()
    assert (users, courses) in [(p["users"], p["courses"])
                                for p in profiles.values()]
    assert 0.85 * courses <= published <= 0.97 * courses
    assert 2.5 * courses <= videos <= 3.5 * courses
    assert 4 * users <= enr <= 8 * users
    assert enr_sum == enr          # courses.enrollment_count is exact
    assert langs >= 6 and cats >= 10
    assert titles >= courses // 5   # varied, not a handful of templates
    # sequences continue after the loaded ids
    for table, col in [("users", "user_id"), ("courses", "course_id"),
                       ("videos", "video_id"),
                       ("quiz_submissions", "submission_id")]:
        cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, col))
        seq = cur.fetchone()[0]
        cur.execute("SELECT CASE WHEN is_called THEN last_value + 1 "
                    "ELSE last_value END FROM " + seq)
        nxt = cur.fetchone()[0]
        cur.execute("SELECT max(%s) FROM %s" % (col, table))
        assert nxt > cur.fetchone()[0], table


def test_course_one(cur):
    cur.execute("SELECT c.published, u.email FROM courses c "
                "JOIN users u ON u.user_id = c.instructor_id "
                "WHERE c.course_id = 1")
    assert cur.fetchone() == (True, "instructor@elearn.dev")
    cur.execute("SELECT count(*) FROM videos WHERE course_id = 1 "
                "AND status = 'ready' AND duration_seconds > 0")
    assert cur.fetchone()[0] >= 1
    cur.execute("SELECT count(DISTINCT q.quiz_id), count(DISTINCT qq.type) "
                "FROM quizzes q JOIN questions qq ON qq.quiz_id = q.quiz_id "
                "WHERE q.course_id = 1")
    quizzes, types = cur.fetchone()
    assert quizzes >= 1 and types >= 4
    # the dev student can still enroll in course 1 for the first time
    cur.execute("SELECT count(*) FROM enrollments "
                "WHERE user_id = 1 AND course_id = 1")
    assert cur.fetchone()[0] == 0


def test_enrollment_count_trigger(cur):
    cur.execute("SELECT enrollment_count FROM courses WHERE course_id = 1")
    n = cur.fetchone()[0]
    cur.execute("INSERT INTO enrollments (user_id, course_id) "
                "SELECT user_id, 1 FROM users WHERE user_id IN (1, 3) "
                "ON CONFLICT DO NOTHING")
    cur.execute("SELECT enrollment_count FROM courses WHERE course_id = 1")
    assert cur.fetchone()[0] == n + 2
    cur.execute("DELETE FROM enrollments WHERE user_id = 1 "
                "AND course_id = 1")
    cur.execute("SELECT enrollment_count FROM courses WHERE course_id = 1")
    assert cur.fetchone()[0] == n + 1


def test_course_item_follows_every_write(cur):
    """courses.item (migration 0016) is elearn_course_item() of the row
    and its instructor after each kind of write: an insert, an edit, a
    publish, enrollments, and the instructor's new display name."""
    def stale():
        cur.execute("SELECT c.course_id FROM courses c "
                    "JOIN users u ON u.user_id = c.instructor_id "
                    "WHERE c.instructor_id = %s "
                    "AND c.item IS DISTINCT FROM elearn_course_item(c, u)",
                    (teacher,))
        return cur.fetchall()

    def item(cid):
        cur.execute("SELECT item::json FROM courses WHERE course_id = %s",
                    (cid,))
        return cur.fetchone()[0]

    cur.execute("SELECT instructor_id FROM courses WHERE course_id = 1")
    teacher = cur.fetchone()[0]
    cur.execute("INSERT INTO courses (instructor_id, title, category, "
                "level) VALUES (%s, 'Item test', 'music', 'beginner') "
                "RETURNING course_id", (teacher,))
    cid = cur.fetchone()[0]
    assert item(cid)["title"] == "Item test"
    assert item(cid)["publishedAt"] is None
    cur.execute("UPDATE courses SET title = 'Item test 2', published = true "
                "WHERE course_id = %s", (cid,))
    assert item(cid)["title"] == "Item test 2"
    assert item(cid)["publishedAt"] is not None
    cur.execute("INSERT INTO enrollments (user_id, course_id) "
                "SELECT user_id, %s FROM users WHERE user_id IN (1, 3)",
                (cid,))
    assert item(cid)["enrollmentCount"] == 2
    cur.execute("UPDATE users SET display_name = 'Renamed \"Teacher\"' "
                "WHERE user_id = %s", (teacher,))
    assert item(cid)["instructor"]["displayName"] == 'Renamed "Teacher"'
    assert item(1)["instructor"]["displayName"] == 'Renamed "Teacher"'
    assert stale() == []


def test_every_course_item_is_current(cur):
    """However the catalog was written (the API, the demo loader's bulk
    COPY under session_replication_role = replica), every stored item is
    the one elearn_course_item() builds now."""
    cur.execute("SELECT count(*) FROM courses c "
                "JOIN users u ON u.user_id = c.instructor_id "
                "WHERE c.item IS DISTINCT FROM elearn_course_item(c, u)")
    assert cur.fetchone()[0] == 0
    cur.execute("SELECT count(*) FROM courses")
    assert cur.fetchone()[0] > 0
