"""The bench's Lua peer of issue 5 (tools/peer-lua, measured by
`BENCH_ONLY=peer make bench` only) runs the module's own report script,
extracted from ngx_http_elearn_progress.c by tools/peer-lua/scripts.py:
after one report through the module, Redis knows the SHA-1 of the
extracted text, so the extraction matches the script byte for byte."""

import hashlib
import os
import subprocess
import uuid

import requests

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_peer_runs_the_module_report_script(stack, base_url, tmp_path):
    out = tmp_path / "scripts.lua"
    subprocess.run([os.path.join(TOP, "tools", "peer-lua", "scripts.py"),
                    str(out)], check=True)
    text = out.read_text()
    body = text.split("[==[\n", 1)[1].split("]==]", 1)[0]
    assert body.startswith("local function merge(")
    assert "return 'ok ' .. m[1] .. ' ' .. m[2]\n" in body
    sha = hashlib.sha1(body.encode()).hexdigest()

    email = "peer%s@test.elearn.dev" % uuid.uuid4().hex[:12]
    r = requests.post(base_url + "/api/v1/auth/register",
                      json={"email": email, "password": "peer pass 1",
                            "displayName": "Peer"})
    assert r.status_code == 201, r.text
    h = {"Authorization": "Bearer " + stack.token(email, "peer pass 1")}
    # any well-formed report runs the report script first (not enrolled:
    # 403, or 404 for a video that does not exist; nothing is written)
    r = requests.post(base_url + "/api/v1/videos/1/progress", headers=h,
                      json={"positionSeconds": 1, "watched": []})
    assert r.status_code in (204, 403, 404), r.text

    exists = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p",
                             stack.env["ELEARN_REDIS_PORT"], "SCRIPT",
                             "EXISTS", sha], capture_output=True, text=True,
                            check=True).stdout.split()
    assert exists == ["1"], "the extracted script is not the module's"
