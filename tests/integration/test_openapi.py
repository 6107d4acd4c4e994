"""The running server answers as docs/openapi.yaml says: each documented
response is fetched for real and validated against its schema."""

import os

import jsonschema
import pytest
import requests
import yaml

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def spec():
    with open(os.path.join(TOP, "docs", "openapi.yaml")) as f:
        return yaml.safe_load(f)


def check(spec, path, method, response, ctype=None):
    op = spec["paths"][path][method]
    doc = op["responses"][str(response.status_code)]
    if "$ref" in doc:
        doc = spec["components"]["responses"][doc["$ref"].split("/")[-1]]
    got = response.headers["Content-Type"].split(";")[0]
    assert got in doc["content"], (got, list(doc["content"]))
    schema = doc["content"][got].get("schema")
    if schema is not None:
        resolver_schema = dict(schema)
        resolver_schema["components"] = spec["components"]
        jsonschema.validate(response.json(), resolver_schema,
                            cls=jsonschema.Draft202012Validator)
    for h in doc.get("headers", {}):
        assert h in response.headers, h


def test_spec_is_openapi_31(spec):
    assert spec["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator.check_schema(
        spec["components"]["schemas"]["Course"])


def test_course_answers_match(spec, base_url, pg, auth):
    with pg.cursor() as cur:
        cur.execute("SELECT course_id FROM courses WHERE published "
                    "ORDER BY course_id LIMIT 25")
        ids = [r[0] for r in cur.fetchall()]
    for cid in ids:
        r = requests.get(base_url + "/api/v1/courses/%d" % cid, headers=auth)
        assert r.status_code == 200
        check(spec, "/api/v1/courses/{courseId}", "get", r)
    check(spec, "/api/v1/courses/{courseId}", "get",
          requests.get(base_url + "/api/v1/courses/999999999",
                       headers=auth))
    check(spec, "/api/v1/courses/{courseId}", "get",
          requests.post(base_url + "/api/v1/courses/1", headers=auth))


def test_health_answers_match(spec, base_url):
    check(spec, "/healthz", "get", requests.get(base_url + "/healthz"))
    check(spec, "/readyz", "get", requests.get(base_url + "/readyz"))
