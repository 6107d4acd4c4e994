"""Course writes (contract section 3, issue 4 "Courses and enrollments"):
POST /api/v1/courses and PATCH /api/v1/courses/{id}.  Roles and ownership,
validation (422 naming each field), the answer equal to GET's document,
and a change visible to detail and search on the very next request (the
course's cache entry is dropped before the PATCH is answered)."""

import uuid

import pytest
import requests

COURSES = "/api/v1/courses"
SEARCH = "/api/v1/courses/search"

INSTRUCTOR = ("instructor@elearn.dev", "instructor-dev-pass")
ADMIN = ("admin@elearn.dev", "admin-dev-pass")
STUDENT = ("student@elearn.dev", "student-dev-pass")


def word():
    """A word no demo course has: letters only, so every tokenizer and
    stemmer keeps it whole."""
    return "zq" + uuid.uuid4().hex.translate(str.maketrans("0123456789",
                                                           "ghijklmnop"))


def bearer(token):
    return {"Authorization": "Bearer " + token}


def course(**over):
    doc = {"title": "Catalog test " + word(), "summary": "A summary",
           "description": "A description", "category": "testing",
           "level": "beginner", "language": "en", "published": True}
    doc.update(over)
    return doc


@pytest.fixture(scope="module")
def who(stack):
    return {"instructor": bearer(stack.token(*INSTRUCTOR)),
            "admin": bearer(stack.token(*ADMIN)),
            "student": bearer(stack.token(*STUDENT))}


@pytest.fixture(scope="module")
def created(pg_dsn):
    """Ids of the courses the tests create; deleted at the end."""
    import psycopg2
    ids = []
    yield ids
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM courses WHERE course_id = ANY(%s)",
                    (ids,))
    conn.close()


@pytest.fixture(scope="module")
def other_instructor(stack, base_url, who, pg_dsn):
    """An instructor who owns none of the test's courses."""
    import psycopg2
    email = "catalog-%s@example.com" % uuid.uuid4().hex[:12]
    r = requests.post(base_url + "/api/v1/admin/users", headers=who["admin"],
                      json={"email": email, "password": "other-pass-123",
                            "displayName": "Other Instructor",
                            "role": "instructor"}, timeout=30)
    assert r.status_code == 201, r.text
    yield bearer(stack.token(email, "other-pass-123"))
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM users WHERE email = %s", (email,))
    conn.close()


def post(base_url, headers, body, created=None):
    r = requests.post(base_url + COURSES, headers=headers, json=body,
                      timeout=30)
    if r.status_code == 201 and created is not None:
        created.append(r.json()["courseId"])
    return r


def patch(base_url, headers, course_id, body):
    return requests.patch("%s%s/%d" % (base_url, COURSES, course_id),
                          headers=headers, json=body, timeout=30)


def get(base_url, headers, course_id):
    return requests.get("%s%s/%d" % (base_url, COURSES, course_id),
                        headers=headers, timeout=30)


def search_ids(base_url, headers, q):
    r = requests.get(base_url + SEARCH, headers=headers, params={"q": q},
                     timeout=30)
    assert r.status_code == 200, r.text
    return [c["courseId"] for c in r.json()["courses"]]


def problem(r, status, slug=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    if slug:
        assert body["type"] == "/problems/" + slug, body
    return body


def fields_of(r):
    return {e["field"] for e in problem(r, 422, "validation")["errors"]}


# --- create ----------------------------------------------------------------


def test_create_answers_what_get_answers(base_url, who, created):
    body = course()
    r = post(base_url, who["instructor"], body, created)
    assert r.status_code == 201, r.text
    doc = r.json()
    for k in ("title", "summary", "description", "category", "level",
              "language"):
        assert doc[k] == body[k]
    assert doc["videos"] == [] and doc["quizzes"] == []
    assert doc["enrollmentCount"] == 0
    assert doc["publishedAt"] and doc["updatedAt"]
    assert doc["instructor"]["displayName"]

    g = get(base_url, who["student"], doc["courseId"])
    assert g.status_code == 200, g.text
    assert g.json() == doc


def test_create_defaults_and_unpublished(base_url, who, created, pg):
    r = post(base_url, who["instructor"],
             {"title": "Draft " + word(), "category": "testing",
              "level": "advanced"}, created)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["summary"] == "" and doc["description"] == ""
    assert doc["language"] == "en"
    assert doc["publishedAt"] is None
    with pg.cursor() as cur:
        cur.execute("SELECT published FROM courses WHERE course_id = %s",
                    (doc["courseId"],))
        assert cur.fetchone()[0] is False
    # not visible to readers until published
    problem(get(base_url, who["student"], doc["courseId"]), 404)


def test_admin_creating_becomes_the_instructor(base_url, who, created, pg):
    r = post(base_url, who["admin"], course(), created)
    assert r.status_code == 201, r.text
    with pg.cursor() as cur:
        cur.execute("SELECT u.email FROM courses c JOIN users u"
                    " ON u.user_id = c.instructor_id WHERE c.course_id = %s",
                    (r.json()["courseId"],))
        assert cur.fetchone()[0] == ADMIN[0]


def test_create_counts_characters_not_bytes(base_url, who, created):
    r = post(base_url, who["instructor"], course(title="é" * 200), created)
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "é" * 200


def test_student_may_not_create(base_url, who, created):
    problem(post(base_url, who["student"], course(), created), 403)


def test_create_needs_a_token(base_url):
    problem(requests.post(base_url + COURSES, json=course(), timeout=30), 401)


@pytest.mark.parametrize("field,value", [
    ("title", ""),
    ("title", "   "),
    ("title", "x" * 201),
    ("title", 5),
    ("title", None),
    ("summary", "x" * 501),
    ("description", "x" * 20001),
    ("category", ""),
    ("category", "Web Dev"),
    ("category", "x" * 65),
    ("level", "expert"),
    ("language", "e"),
    ("language", "EN"),
    ("language", "english"),
    ("language", "en-"),
    ("published", "yes"),
    ("published", 1),
])
def test_create_validation(base_url, who, created, field, value):
    r = post(base_url, who["instructor"], course(**{field: value}), created)
    assert fields_of(r) == {field}


def test_create_missing_and_unknown_fields(base_url, who, created):
    r = post(base_url, who["instructor"], {"price": 10, "summary": "s"},
             created)
    assert fields_of(r) == {"price", "title", "category", "level"}


# --- update ----------------------------------------------------------------


@pytest.fixture
def mine(base_url, who, created):
    r = post(base_url, who["instructor"], course(), created)
    assert r.status_code == 201, r.text
    return r.json()


def test_patch_is_seen_by_detail_and_search_at_once(base_url, who, mine):
    cid = mine["courseId"]
    # prime the cache with the old document
    assert get(base_url, who["student"], cid).json()["title"] == mine["title"]
    assert get(base_url, who["student"], cid).json()["title"] == mine["title"]

    new = word()
    r = patch(base_url, who["instructor"], cid,
              {"title": "Renamed " + new, "level": "intermediate"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["title"] == "Renamed " + new
    assert doc["level"] == "intermediate"
    assert doc["summary"] == mine["summary"]       # untouched
    assert doc["updatedAt"] >= mine["updatedAt"]

    g = get(base_url, who["student"], cid)
    assert g.status_code == 200 and g.json() == doc
    assert search_ids(base_url, who["student"], new) == [cid]


def test_publish_and_unpublish(base_url, who, created):
    r = post(base_url, who["instructor"], course(published=False), created)
    assert r.status_code == 201, r.text
    cid = r.json()["courseId"]
    problem(get(base_url, who["student"], cid), 404)

    r = patch(base_url, who["instructor"], cid, {"published": True})
    assert r.status_code == 200, r.text
    published_at = r.json()["publishedAt"]
    assert published_at
    assert get(base_url, who["student"], cid).status_code == 200   # cached

    # unpublishing drops the cached document and keeps publishedAt
    r = patch(base_url, who["instructor"], cid, {"published": False})
    assert r.status_code == 200, r.text
    assert r.json()["publishedAt"] == published_at
    problem(get(base_url, who["student"], cid), 404)

    r = patch(base_url, who["instructor"], cid, {"published": True})
    assert r.json()["publishedAt"] == published_at


def test_admin_may_patch_any(base_url, who, mine):
    r = patch(base_url, who["admin"], mine["courseId"],
              {"summary": "Edited by an admin"})
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == "Edited by an admin"
    # the course keeps its instructor
    assert r.json()["instructor"] == mine["instructor"]


def test_other_instructor_may_not_patch(base_url, other_instructor, mine):
    problem(patch(base_url, other_instructor, mine["courseId"],
                  {"title": "Taken over"}), 403)


def test_student_may_not_patch(base_url, who, mine):
    problem(patch(base_url, who["student"], mine["courseId"],
                  {"title": "Nope"}), 403)


def test_patch_missing_course(base_url, who):
    problem(patch(base_url, who["instructor"], 999999999999,
                  {"title": "Nobody"}), 404)


@pytest.mark.parametrize("body,fields", [
    ({}, {"body"}),
    ({"price": 3}, {"price"}),
    ({"title": None}, {"title"}),
    ({"title": "ok", "level": "expert"}, {"level"}),
    ({"language": "x", "category": "A B"}, {"language", "category"}),
])
def test_patch_validation(base_url, who, mine, body, fields):
    assert fields_of(patch(base_url, who["instructor"], mine["courseId"],
                           body)) == fields


def test_statements_use_bound_parameters(base_url, who, mine):
    title = "Robert'); DROP TABLE courses;-- " + word()
    r = patch(base_url, who["instructor"], mine["courseId"], {"title": title})
    assert r.status_code == 200, r.text
    assert get(base_url, who["student"], mine["courseId"]).json()["title"] \
        == title


def test_invalid_create_writes_nothing_and_keeps_the_connection(
        base_url, who, pg):
    """A 422 once went on to run the insert after answering (the
    validation's "answered" code was NGX_OK), leaving the request open."""
    title = "Invalid " + word()
    with requests.Session() as s:
        r = s.post(base_url + COURSES, headers=who["instructor"],
                   json=course(title=title, category="Web Dev"), timeout=30)
        assert fields_of(r) == {"category"}
        # the same keep-alive connection answers the next request
        r = s.get(base_url + "/api/v1/courses/1", headers=who["student"],
                  timeout=10)
        assert r.status_code in (200, 404)
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM courses WHERE title = %s", (title,))
        assert cur.fetchone()[0] == 0


# --- one-word search postings (migration 0013) ----------------------------

POSTINGS_DIFF = """
    SELECT count(*) FROM (
        (SELECT lexeme, course_id, rank, category, level, language
           FROM search_postings WHERE course_id = ANY(%(ids)s)
         EXCEPT ALL
         SELECT u.lexeme, c.course_id,
                ts_rank(c.search, quote_literal(u.lexeme)::tsquery),
                c.category, c.level, c.language
           FROM courses c, unnest(c.search) u
          WHERE c.published AND c.course_id = ANY(%(ids)s))
        UNION ALL
        (SELECT u.lexeme, c.course_id,
                ts_rank(c.search, quote_literal(u.lexeme)::tsquery),
                c.category, c.level, c.language
           FROM courses c, unnest(c.search) u
          WHERE c.published AND c.course_id = ANY(%(ids)s)
         EXCEPT ALL
         SELECT lexeme, course_id, rank, category, level, language
           FROM search_postings WHERE course_id = ANY(%(ids)s))) d"""


def postings_of(pg, cid):
    with pg.cursor() as cur:
        cur.execute("SELECT lexeme, category FROM search_postings "
                    "WHERE course_id = %s ORDER BY lexeme", (cid,))
        return cur.fetchall()


def cells(pg, lexeme):
    """The non-zero search_term_counts cells of a lexeme."""
    with pg.cursor() as cur:
        cur.execute("SELECT category, level, language, n "
                    "FROM search_term_counts WHERE lexeme = %s AND n > 0 "
                    "ORDER BY 1, 2, 3", (lexeme,))
        return cur.fetchall()


def postings_diff(pg, ids):
    with pg.cursor() as cur:
        cur.execute(POSTINGS_DIFF, {"ids": list(ids)})
        return cur.fetchone()[0]


def facet(r, name, value):
    return {f["value"]: f["count"] for f in r.json()["facets"][name]}.get(
        value, 0)


def test_one_word_postings_follow_every_write(base_url, who, created, pg):
    """One-word searches read search_postings (ranks computed at write
    time): each write keeps it equal to ts_rank over the course's own
    vector, in the writer's transaction, so search answers the very next
    request right."""
    a, b, c = word(), word(), word()
    r = post(base_url, who["instructor"],
             course(title="Postings " + a, summary="About " + b,
                    category="postings-x"), created)
    assert r.status_code == 201, r.text
    cid = r.json()["courseId"]
    assert postings_diff(pg, [cid]) == 0
    lexemes = [row[0] for row in postings_of(pg, cid)]
    with pg.cursor() as cur:
        cur.execute("SELECT elearn_search_term(websearch_to_tsquery("
                    "'english', w)) FROM unnest(%s::text[]) w", ([a, b],))
        stems = [row[0] for row in cur.fetchall()]
    assert len(stems) == 2 and set(stems) <= set(lexemes)
    assert cells(pg, stems[1]) == [("postings-x", "beginner", "en", 1)]
    assert search_ids(base_url, who["student"], a) == [cid]
    assert search_ids(base_url, who["student"], b) == [cid]

    # title and category change: old word gone, new word and facet there
    r = patch(base_url, who["instructor"], cid,
              {"title": "Postings " + c, "category": "postings-y"})
    assert r.status_code == 200, r.text
    assert postings_diff(pg, [cid]) == 0
    assert search_ids(base_url, who["student"], a) == []
    assert search_ids(base_url, who["student"], c) == [cid]
    s = requests.get(base_url + SEARCH, headers=who["student"],
                     params={"q": b}, timeout=30)
    assert facet(s, "category", "postings-y") == 1
    assert facet(s, "category", "postings-x") == 0
    assert s.json()["pagination"]["totalResults"] == 1
    assert cells(pg, stems[1]) == [("postings-y", "beginner", "en", 1)]
    assert cells(pg, stems[0]) == []

    # an enrollment count change rewrites nothing (trigger's WHEN)
    with pg.cursor() as cur:
        cur.execute("SELECT xmin::text FROM search_postings "
                    "WHERE course_id = %s ORDER BY lexeme", (cid,))
        before = cur.fetchall()
        cur.execute("UPDATE courses SET enrollment_count = "
                    "enrollment_count + 1 WHERE course_id = %s", (cid,))
        cur.execute("SELECT xmin::text FROM search_postings "
                    "WHERE course_id = %s ORDER BY lexeme", (cid,))
        assert cur.fetchall() == before

    # unpublished: no postings, no hits; published again: back
    r = patch(base_url, who["instructor"], cid, {"published": False})
    assert r.status_code == 200, r.text
    assert postings_of(pg, cid) == []
    assert cells(pg, stems[1]) == []
    assert search_ids(base_url, who["student"], c) == []
    r = patch(base_url, who["instructor"], cid, {"published": True})
    assert r.status_code == 200, r.text
    assert postings_diff(pg, [cid]) == 0
    assert search_ids(base_url, who["student"], c) == [cid]

    # deleted (there is no API for it: the rows go with the course)
    with pg.cursor() as cur:
        cur.execute("DELETE FROM courses WHERE course_id = %s", (cid,))
    assert postings_of(pg, cid) == []
    assert cells(pg, stems[1]) == []


def test_postings_equal_the_catalog(pg):
    """The loaded catalog (COPY with triggers off, then
    elearn_search_postings_rebuild()) against ts_rank over 300 courses."""
    with pg.cursor() as cur:
        cur.execute("SELECT course_id FROM courses "
                    "ORDER BY hashint8(course_id) LIMIT 300")
        ids = [row[0] for row in cur.fetchall()]
    assert len(ids) == 300
    assert postings_diff(pg, ids) == 0


def test_term_counts_equal_the_catalog(pg):
    """search_term_counts against counting the catalog, for 40 lexemes
    from the commonest down."""
    with pg.cursor() as cur:
        cur.execute("SELECT lexeme FROM search_term_counts GROUP BY 1 "
                    "ORDER BY sum(n) DESC, 1")
        lexemes = [row[0] for row in cur.fetchall()]
        assert len(lexemes) > 100
        sample = lexemes[:10] + lexemes[10::len(lexemes) // 30][:30]
        cur.execute(
            "SELECT count(*) FROM ("
            "(SELECT lexeme, category, level, language, n "
            "   FROM search_term_counts "
            "  WHERE lexeme = ANY(%(l)s) AND n > 0 "
            " EXCEPT ALL "
            " SELECT u.lexeme, c.category, c.level, c.language, "
            "        count(*)::integer "
            "   FROM courses c, unnest(tsvector_to_array(c.search)) u(lexeme) "
            "  WHERE c.published AND u.lexeme = ANY(%(l)s) "
            "  GROUP BY 1, 2, 3, 4) "
            "UNION ALL "
            "(SELECT u.lexeme, c.category, c.level, c.language, "
            "        count(*)::integer "
            "   FROM courses c, unnest(tsvector_to_array(c.search)) u(lexeme) "
            "  WHERE c.published AND u.lexeme = ANY(%(l)s) "
            "  GROUP BY 1, 2, 3, 4 "
            " EXCEPT ALL "
            " SELECT lexeme, category, level, language, n "
            "   FROM search_term_counts "
            "  WHERE lexeme = ANY(%(l)s) AND n > 0)) d", {"l": sample})
        assert cur.fetchone()[0] == 0
