"""Catalog search and suggest (contract sections 1 and 3, issue 4 "Search"):
offset and cursor pagination, signed cursors, Link headers, facets, bad
input answered with problems (never a 500), typeahead."""

import base64
import urllib.parse
import uuid

import pytest
import requests

SEARCH = "/api/v1/courses/search"
SUGGEST = "/api/v1/courses/suggest"
TSQ = "websearch_to_tsquery('english', %s)"


def get(base_url, auth, path, params=None, raw=None):
    url = base_url + path
    if raw is not None:
        url += "?" + raw
    return requests.get(url, params=params, headers=auth, timeout=30)


def problem(r, status, slug=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    if slug:
        assert body["type"] == "/problems/" + slug, body
    return body


def sql_count(pg, q=None, **filters):
    where, args = ["published"], []
    if q is not None:
        where.append("search @@ " + TSQ)
        args.append(q)
    for k, v in filters.items():
        where.append("%s = %%s" % k)
        args.append(v)
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM courses WHERE " +
                    " AND ".join(where), args)
        return cur.fetchone()[0]


def links(r):
    """{rel: url} from an RFC 8288 Link header."""
    out = {}
    for part in r.headers.get("Link", "").split(", <"):
        url, _, rel = part.partition(">; rel=")
        out[rel.strip('"')] = url.lstrip("<")
    return out


# --- offset style -------------------------------------------------------

def test_offset_shape_and_totals_match_sql(base_url, auth, pg):
    r = get(base_url, auth, SEARCH, {"q": "kubernetes", "pageSize": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    n = sql_count(pg, "kubernetes")
    assert 0 < n < 10000
    p = body["pagination"]
    assert p["currentPage"] == 1 and p["pageSize"] == 7
    assert p["totalResults"] == min(n, 1000)      # relevance: ranked set
    assert p["totalResultsExact"] is True
    assert p["totalPages"] == -(-p["totalResults"] // 7)
    assert isinstance(p["nextCursor"], str)
    assert len(body["courses"]) == 7
    c = body["courses"][0]
    assert set(c) == {"courseId", "title", "summary", "category", "level",
                      "language", "instructor", "enrollmentCount",
                      "publishedAt"}
    assert set(c["instructor"]) == {"userId", "displayName"}
    # newest over the same q pages through every match
    r = get(base_url, auth, SEARCH, {"q": "kubernetes", "sort": "newest"})
    assert r.json()["pagination"]["totalResults"] == n


def test_browse_without_q_is_newest_first(base_url, auth, pg):
    r = get(base_url, auth, SEARCH, {"level": "advanced", "pageSize": 50})
    assert r.status_code == 200, r.text
    courses = r.json()["courses"]
    assert all(c["level"] == "advanced" for c in courses)
    dates = [c["publishedAt"] for c in courses]
    assert dates == sorted(dates, reverse=True)
    n = sql_count(pg, level="advanced")
    p = r.json()["pagination"]
    assert p["totalResults"] == min(n, 10000)
    assert p["totalResultsExact"] == (n < 10000)


def test_popular_sort_orders_by_enrollments(base_url, auth):
    r = get(base_url, auth, SEARCH, {"q": "python", "sort": "popular",
                                     "pageSize": 30})
    counts = [c["enrollmentCount"] for c in r.json()["courses"]]
    assert counts and counts == sorted(counts, reverse=True)


def test_offset_pages_are_consecutive(base_url, auth):
    p = {"q": "python", "sort": "newest", "pageSize": 10}
    one = get(base_url, auth, SEARCH, dict(p, page=1)).json()["courses"]
    two = get(base_url, auth, SEARCH, dict(p, page=2)).json()["courses"]
    both = get(base_url, auth, SEARCH,
               dict(p, pageSize=20)).json()["courses"]
    assert one + two == both


def test_facets_sum_to_the_total(base_url, auth):
    for params in ({"q": "kubernetes"}, {"q": "python", "level": "beginner"},
                   {"category": "music"}):
        body = get(base_url, auth, SEARCH, params).json()
        f, total = body["facets"], body["pagination"]["totalResults"]
        if params.get("q") and body["pagination"]["totalResults"] == 1000:
            continue
        for facet in ("category", "level", "language"):
            assert sum(x["count"] for x in f[facet]) == total, (facet, f)
        if "level" in params:
            assert [x["value"] for x in f["level"]] == [params["level"]]


def test_link_headers_offset(base_url, auth):
    r = get(base_url, auth, SEARCH, {"q": "python", "sort": "newest",
                                     "pageSize": 5, "page": 3})
    ls = links(r)
    assert set(ls) == {"first", "prev", "next", "last"}, r.headers
    assert all(u.startswith(SEARCH + "?") for u in ls.values())
    nxt = requests.get(base_url + ls["next"], headers=auth).json()
    assert nxt["pagination"]["currentPage"] == 4
    prev = requests.get(base_url + ls["prev"], headers=auth).json()
    assert prev["pagination"]["currentPage"] == 2
    last = requests.get(base_url + ls["last"], headers=auth)
    assert last.status_code == 200
    assert "next" not in links(last)


def test_offset_stops_at_10000(base_url, auth):
    ok = get(base_url, auth, SEARCH, {"page": 100, "pageSize": 100})
    assert ok.status_code == 200
    # the last offset page leads on with a cursor
    assert "cursor=" in links(ok)["next"]
    body = problem(get(base_url, auth, SEARCH,
                       {"page": 101, "pageSize": 100}), 422)
    assert body["errors"][0]["field"] == "page"
    assert "cursor" in body["errors"][0]["message"]
    problem(get(base_url, auth, SEARCH, {"page": 501}), 422)


def test_page_size_bounds(base_url, auth):
    assert get(base_url, auth, SEARCH, {"pageSize": 100}).status_code == 200
    body = problem(get(base_url, auth, SEARCH, {"pageSize": 101}), 422)
    assert body["errors"][0]["field"] == "pageSize"


# --- cursor style -------------------------------------------------------

def walk(base_url, auth, params, between=None):
    seen, cursor, pages = [], None, 0
    while True:
        p = dict(params)
        if cursor:
            p["cursor"] = cursor
        r = get(base_url, auth, SEARCH, p)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [c["courseId"] for c in body["courses"]]
        pages += 1
        cursor = body["pagination"]["nextCursor"]
        if cursor is None:
            assert "next" not in links(r)
            return seen, pages
        if "cursor" in p:
            assert "cursor=" in links(r)["next"]
        if between:
            between(pages)


@pytest.fixture
def inserted(pg):
    ids = []
    yield ids
    if ids:
        with pg.cursor() as cur:
            cur.execute("DELETE FROM courses WHERE course_id = ANY(%s)",
                        (ids,))


@pytest.mark.parametrize("sort", ["newest", "popular", "relevance"])
def test_cursor_walk_sees_every_match_once_while_courses_are_added(
        base_url, auth, pg, inserted, sort):
    word = "kubernetes"
    with pg.cursor() as cur:
        cur.execute("SELECT course_id FROM courses WHERE published AND "
                    "search @@ " + TSQ + " AND level = 'advanced'", (word,))
        expected = {r[0] for r in cur.fetchall()}
    assert 20 < len(expected) < 1000

    def add(page):
        with pg.cursor() as cur:
            cur.execute(
                "INSERT INTO courses (instructor_id, title, summary, "
                "category, level, language, published) VALUES "
                "(1, %s, 'walk test', 'devops', 'advanced', 'en', true), "
                "(1, %s, 'walk test', 'devops', 'advanced', 'en', true) "
                "RETURNING course_id",
                ("Kubernetes walk %s" % uuid.uuid4().hex,
                 "Kubernetes walk %s" % uuid.uuid4().hex))
            inserted.extend(r[0] for r in cur.fetchall())

    seen, pages = walk(base_url, auth, {"q": word, "level": "advanced",
                                        "sort": sort, "pageSize": 15}, add)
    assert pages > 2
    assert len(seen) == len(set(seen)), "a course came twice"
    assert expected <= set(seen), "skipped: %s" % (expected - set(seen))
    # only courses added during the walk may come on top
    assert set(seen) - expected <= set(inserted)


def test_cursor_walk_equals_offset_listing(base_url, auth):
    params = {"q": "python", "category": "programming", "sort": "newest"}
    seen, _ = walk(base_url, auth, dict(params, pageSize=40))
    total = get(base_url, auth, SEARCH, params).json()["pagination"]
    assert len(seen) == total["totalResults"]


def test_cursor_response_shape(base_url, auth):
    first = get(base_url, auth, SEARCH, {"q": "python", "pageSize": 5})
    cursor = first.json()["pagination"]["nextCursor"]
    r = get(base_url, auth, SEARCH, {"q": "python", "pageSize": 5,
                                     "cursor": cursor})
    assert r.status_code == 200, r.text
    assert set(r.json()["pagination"]) == {"pageSize", "nextCursor"}
    assert set(links(r)) == {"next"}
    ids1 = {c["courseId"] for c in first.json()["courses"]}
    assert not ids1 & {c["courseId"] for c in r.json()["courses"]}


def tampered(cursor):
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor)
                                                             % 4)))
    raw[0] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def test_tampered_cursor_is_400(base_url, auth):
    cursor = get(base_url, auth, SEARCH, {"q": "python", "sort": "newest"}) \
        .json()["pagination"]["nextCursor"]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    for bad in (flipped, tampered(cursor), cursor[:-1], "x", "",
                "!!!!", "A" * 300):
        problem(get(base_url, auth, SEARCH, {"q": "python", "sort": "newest",
                                             "cursor": bad}), 400)


def test_cursor_of_another_query_is_400(base_url, auth):
    cursor = get(base_url, auth, SEARCH, {"q": "python", "sort": "newest"}) \
        .json()["pagination"]["nextCursor"]
    for other in ({"q": "java", "sort": "newest"},
                  {"q": "python", "sort": "popular"},
                  {"q": "python", "sort": "newest", "level": "beginner"}):
        problem(get(base_url, auth, SEARCH, dict(other, cursor=cursor)),
                400, "bad-cursor")


# --- bad input ----------------------------------------------------------

@pytest.mark.parametrize("raw,status,field", [
    ("sort=best", 422, "sort"),
    ("level=expert", 422, "level"),
    ("language=en_US!", 422, "language"),
    ("category=" + "c" * 65, 422, "category"),
    ("page=-1", 422, "page"),
    ("page=0", 422, "page"),
    ("page=abc", 400, None),
    ("page=1.5", 400, None),
    ("page=", 400, None),
    ("pageSize=ten", 400, None),
    ("pageSize=0", 422, "pageSize"),
    ("pageSize=-5", 422, "pageSize"),
    ("q=", 422, "q"),
    ("q=+++", 422, "q"),
    ("q=%20%09", 422, "q"),
    ("q=" + "a" * 2049, 422, "q"),
    ("q=%C3%28", 400, None),
    ("q=%FF", 400, None),
    ("q=ab%00cd", 400, None),
    ("q=%ED%A0%80", 400, None),            # a UTF-16 surrogate
    ("q=a&q=b", 400, None),
    ("page=2&cursor=abc", 400, None),
])
def test_bad_input_is_a_problem(base_url, auth, raw, status, field):
    body = problem(get(base_url, auth, SEARCH, raw=raw), status)
    if field:
        assert body["errors"][0]["field"] == field, body
    else:
        assert "detail" in body


def test_long_but_allowed_q_and_unknown_params(base_url, auth):
    r = get(base_url, auth, SEARCH, raw="q=" + "a" * 2048 + "&utm=x&foo")
    assert r.status_code == 200, r.text
    assert get(base_url, auth, SEARCH,
               {"q": "python", "whatever": "1"}).status_code == 200


def test_plus_is_a_space_and_unicode_works(base_url, auth):
    a = get(base_url, auth, SEARCH, raw="q=machine+learning&sort=newest")
    b = get(base_url, auth, SEARCH,
            raw="q=machine%20learning&sort=newest")
    assert a.status_code == 200 and a.json() == b.json()
    r = get(base_url, auth, SEARCH, {"q": "práctico ñandú 日本語"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("q", [
    "'; DROP TABLE courses; --", "\" OR 1=1 --", "python) | (!", "<>&|!:*",
    "\\", "%", "$1", "' UNION SELECT password_hash FROM users --"])
def test_sql_metacharacters_are_just_text(base_url, auth, pg, q):
    before = sql_count(pg)
    for sort in ("relevance", "newest", "popular"):
        r = get(base_url, auth, SEARCH, {"q": q, "sort": sort})
        assert r.status_code == 200, (q, r.text)
        assert "argon2" not in r.text
    r = get(base_url, auth, SUGGEST, {"q": q})
    assert r.status_code == 200, (q, r.text)
    assert sql_count(pg) == before


def test_search_needs_a_token(base_url):
    r = requests.get(base_url + SEARCH, params={"q": "python"})
    assert r.status_code == 401
    r = requests.post(base_url + SEARCH, headers={})
    assert r.status_code in (401, 405)


# --- suggest ------------------------------------------------------------

def test_suggest_prefix_case_insensitive(base_url, auth, pg):
    for q in ("intro", "INTRO", "Mastering Py", "kUbErNeTeS"):
        r = get(base_url, auth, SUGGEST, {"q": q})
        assert r.status_code == 200, r.text
        s = r.json()["suggestions"]
        assert 1 <= len(s) <= 8, (q, s)
        assert all(x["title"].lower().startswith(q.lower()) for x in s)
        assert all(set(x) == {"courseId", "title"} for x in s)
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM courses WHERE published AND "
                    "lower(title) LIKE 'intro%%'")
        assert cur.fetchone()[0] > 8
    assert len(get(base_url, auth, SUGGEST,
                   {"q": "intro"}).json()["suggestions"]) == 8
    assert get(base_url, auth, SUGGEST,
               {"q": "zzzzqqq"}).json()["suggestions"] == []
    # wildcards are literal
    assert get(base_url, auth, SUGGEST,
               {"q": "%"}).json()["suggestions"] == []


@pytest.mark.parametrize("raw,status", [
    ("", 422), ("q=", 422), ("q=%20", 422), ("q=" + "a" * 101, 422),
    ("q=%FF", 400), ("q=a&q=b", 400)])
def test_suggest_bad_input(base_url, auth, raw, status):
    problem(get(base_url, auth, SUGGEST, raw=raw), status)


def test_suggest_hundred_characters_is_fine(base_url, auth):
    q = urllib.parse.quote("é" * 100)
    assert get(base_url, auth, SUGGEST, raw="q=" + q).status_code == 200


def test_relevance_pages_cut_from_the_list_match_the_ranking(base_url, auth,
                                                              pg):
    """After the first page, relevance pages are cut from the query's
    ranked list (docs/caching.md): offset pages, and a cursor walk, give
    exactly what ranking in SQL gives, in order, to the last candidate."""
    q, level = "python", ["beginner", "intermediate",
                          "advanced"][uuid.uuid4().int % 3]
    with pg.cursor() as cur:
        cur.execute(
            "SELECT course_id FROM (SELECT course_id, ts_rank(search, "
            + TSQ + ") AS rank FROM (SELECT course_id, search FROM courses "
            "WHERE published AND search @@ " + TSQ + " AND level = %s "
            "ORDER BY course_id LIMIT 1000) c) r "
            "ORDER BY rank DESC, course_id DESC", (q, q, level))
        ranked = [r[0] for r in cur.fetchall()]
    assert 40 < len(ranked) <= 1000
    size = 17
    params = {"q": q, "level": level, "pageSize": size}
    got = []
    for page in range(1, (len(ranked) + size - 1) // size + 2):
        r = get(base_url, auth, SEARCH, dict(params, page=page))
        assert r.status_code == 200, r.text
        got += [c["courseId"] for c in r.json()["courses"]]
    assert got == ranked
    seen, pages = walk(base_url, auth, params)
    assert seen == ranked
    assert pages == (len(ranked) + size - 1) // size


def test_one_word_relevance_ranks_every_match(base_url, auth, pg):
    """A one-word query is ranked over all its matches, not a subset:
    its candidates are the 1,000 best by ts_rank of every matching
    course (precomputed in search_postings), so page 1 of a word in tens
    of thousands of courses shows its best.  Offset pages and a cursor
    walk give exactly that list."""
    q = "edition"
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM courses WHERE published AND "
                    "search @@ " + TSQ, (q,))
        matches = cur.fetchone()[0]
        cur.execute(
            "SELECT course_id FROM courses WHERE published AND search @@ "
            + TSQ + " ORDER BY ts_rank(search, " + TSQ + ") DESC, "
            "course_id DESC LIMIT 1000", (q, q))
        best = [r[0] for r in cur.fetchall()]
    assert matches > 5000 and len(best) == 1000
    size = 100
    got = []
    for page in range(1, 12):
        r = get(base_url, auth, SEARCH, {"q": q, "pageSize": size,
                                         "page": page})
        assert r.status_code == 200, r.text
        got += [c["courseId"] for c in r.json()["courses"]]
        if page == 1:
            # what relevance can list: its candidates (contract: offset
            # pages stop at the total; sort=newest reaches the rest)
            assert r.json()["pagination"]["totalResults"] == 1000
    assert got == best
    seen, pages = walk(base_url, auth, {"q": q, "pageSize": size})
    assert seen == best and pages == 10
