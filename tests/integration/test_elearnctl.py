"""tools/elearnctl: creating instructors and admins, duplicate emails in
any case, input validation, set-role and list-users, against the test
stack's database (fixtures `stack_env` and `pg` from conftest.py).

Every account a test creates has a unique email and is deleted at the end,
whatever happened.  The password must never appear in what the tool
prints, and the stored Argon2id hash must verify it (libargon2's own
argon2id_verify, through ctypes).
"""

import ctypes
import os
import re
import subprocess
import uuid

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ELEARNCTL = os.path.join(TOP, "tools", "elearnctl")
PHC_RE = re.compile(r"^\$argon2id\$v=19\$m=19456,t=2,p=1\$"
                    r"([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


@pytest.fixture
def emails(pg):
    """Unique emails for one test; their accounts are deleted afterwards."""
    made = []

    def new(prefix="ctl"):
        e = "%s-%s@elearnctl.test" % (prefix, uuid.uuid4().hex[:12])
        made.append(e)
        return e

    yield new
    with pg.cursor() as cur:
        cur.execute("DELETE FROM users WHERE lower(email) = ANY(%s)",
                    ([e.lower() for e in made],))


def ctl(env, *args, stdin=None):
    return subprocess.run([ELEARNCTL] + list(args), env=env, cwd=TOP,
                          input=stdin, capture_output=True, text=True,
                          timeout=60)


def user_row(pg, email):
    with pg.cursor() as cur:
        cur.execute("SELECT user_id, email, role, display_name, "
                    "password_hash, updated_at FROM users "
                    "WHERE lower(email) = lower(%s)", (email,))
        return cur.fetchone()


def argon2_verifies(phc, password):
    assert PHC_RE.match(phc), phc
    lib = ctypes.CDLL("libargon2.so.1")
    pw = password.encode()
    return lib.argon2id_verify(phc.encode(), pw, len(pw)) == 0


def assert_silent_about(r, password):
    assert password not in r.stdout
    assert password not in r.stderr


def test_create_instructor_and_admin(stack_env, pg, emails, tmp_path):
    # instructor: password from a file
    email_i = emails("instructor")
    pw_i = "instr-" + uuid.uuid4().hex[:10]
    pwfile = tmp_path / "pw"
    pwfile.write_text(pw_i + "\n")
    r = ctl(stack_env, "create-user", "--email", email_i, "--name",
            "Iris Instructor", "--role", "instructor",
            "--password-file", str(pwfile))
    assert r.returncode == 0, r.stderr
    assert_silent_about(r, pw_i)
    assert re.fullmatch(r"\d+\n", r.stdout), r.stdout
    row = user_row(pg, email_i)
    assert row is not None
    assert row[0] == int(r.stdout)
    assert (row[1], row[2], row[3]) == (email_i, "instructor",
                                        "Iris Instructor")
    assert PHC_RE.match(row[4]), row[4]
    assert argon2_verifies(row[4], pw_i)
    assert not argon2_verifies(row[4], pw_i + "x")

    # admin: password on standard input (not a terminal), non-ASCII
    email_a = emails("admin")
    pw_a = "ädmin-pässwörd-" + uuid.uuid4().hex[:6]
    r = ctl(stack_env, "create-user", "--email", email_a, "--name",
            "Zoë O'Admin", "--role", "admin", stdin=pw_a + "\n")
    assert r.returncode == 0, r.stderr
    assert_silent_about(r, pw_a)
    row = user_row(pg, email_a)
    assert row[0] == int(r.stdout)
    assert (row[2], row[3]) == ("admin", "Zoë O'Admin")
    assert argon2_verifies(row[4], pw_a)

    # two hashes of one password differ: the salt is random
    email_b = emails("admin2")
    r = ctl(stack_env, "create-user", "--email", email_b, "--name", "B",
            "--role", "admin", stdin=pw_a + "\n")
    assert r.returncode == 0, r.stderr
    assert user_row(pg, email_b)[4] != row[4]


def test_duplicate_email_any_case_exits_3(stack_env, pg, emails):
    email = emails("dup")
    pw = "dup-pass-" + uuid.uuid4().hex[:8]
    r = ctl(stack_env, "create-user", "--email", email, "--name", "First",
            "--role", "instructor", stdin=pw + "\n")
    assert r.returncode == 0, r.stderr
    before = user_row(pg, email)

    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        count = cur.fetchone()[0]
    r = ctl(stack_env, "create-user", "--email", email.upper(), "--name",
            "Second", "--role", "admin", stdin=pw + "-other\n")
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "exists" in r.stderr
    assert r.stdout == ""
    assert_silent_about(r, pw)
    assert user_row(pg, email) == before
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
        assert cur.fetchone()[0] == count


@pytest.mark.parametrize("args,password,message", [
    (["--role", "teacher"], "long-enough-1", "invalid role"),
    (["--role", "student"], "short", "8 to 1024 characters"),
    (["--role", "student"], "x" * 1025, "8 to 1024 characters"),
], ids=["role", "short", "long"])
def test_invalid_input_exits_2(stack_env, pg, emails, args, password,
                               message):
    email = emails("bad")
    r = ctl(stack_env, "create-user", "--email", email, "--name", "Bad",
            *args, stdin=password + "\n")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr
    assert_silent_about(r, password)
    assert user_row(pg, email) is None


def test_invalid_email_and_missing_arguments_exit_2(stack_env, pg):
    r = ctl(stack_env, "create-user", "--email", "no-at-sign.test",
            "--name", "N", "--role", "student", stdin="long-enough-1\n")
    assert r.returncode == 2
    assert "invalid email" in r.stderr
    r = ctl(stack_env, "create-user", "--email", "a@b.test")
    assert r.returncode == 2
    r = ctl(stack_env, "frobnicate")
    assert r.returncode == 2
    r = ctl(stack_env, "--help")
    assert r.returncode == 0
    assert "Exit status" in r.stdout


def test_set_role_and_list_users(stack_env, pg, emails):
    email = emails("role")
    r = ctl(stack_env, "create-user", "--email", email, "--name", "R",
            "--role", "student", stdin="role-pass-123\n")
    assert r.returncode == 0, r.stderr
    uid = r.stdout.strip()

    r = ctl(stack_env, "set-role", "--email", email.upper(), "--role",
            "instructor")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == uid
    assert user_row(pg, email)[2] == "instructor"

    r = ctl(stack_env, "set-role", "--email", email, "--role", "root")
    assert r.returncode == 2
    assert user_row(pg, email)[2] == "instructor"

    r = ctl(stack_env, "set-role", "--email", "nobody-" + email,
            "--role", "admin")
    assert r.returncode == 4

    r = ctl(stack_env, "list-users", "--role", "instructor")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["user_id", "email", "role"]
    mine = [ln.split("\t") for ln in lines[1:]
            if ln.split("\t")[1] == email]
    assert len(mine) == 1 and mine[0][0] == uid and mine[0][2] == "instructor"
    assert all(ln.split("\t")[2] == "instructor" for ln in lines[1:])


def test_long_multibyte_password(stack_env, pg, emails):
    """1,024 characters of 2-byte UTF-8 are allowed and hashed whole."""
    email = emails("long")
    pw = "é" * 1024
    r = ctl(stack_env, "create-user", "--email", email, "--name", "Long",
            "--role", "student", stdin=pw + "\n")
    assert r.returncode == 0, r.stderr
    row = user_row(pg, email)
    assert argon2_verifies(row[4], pw)
    assert not argon2_verifies(row[4], pw[:-1])
