-- Accounts and the helpers every later table uses.
--
-- Email is unique case-insensitively through a unique index on lower(email)
-- (no citext: one fewer extension, and the login query says what it means:
-- WHERE lower(email) = lower($1)).  Passwords are only ever stored as
-- Argon2id PHC strings ($argon2id$v=19$m=...,t=...,p=...$salt$hash); the
-- check rejects anything else, so a plaintext or legacy hash cannot slip in.

CREATE FUNCTION elearn_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION elearn_touch_updated_at() IS
    'BEFORE UPDATE trigger: keeps updated_at current without trusting callers';

CREATE TABLE users (
    user_id       bigserial PRIMARY KEY,
    email         text NOT NULL
                  CHECK (char_length(email) BETWEEN 3 AND 254
                         AND email = btrim(email)
                         AND position('@' IN email) > 1),
    password_hash text NOT NULL
                  CHECK (password_hash LIKE '$argon2id$%'),
    display_name  text NOT NULL
                  CHECK (char_length(display_name) BETWEEN 1 AND 100),
    role          text NOT NULL DEFAULT 'student'
                  CHECK (role IN ('student', 'instructor', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
COMMENT ON COLUMN users.password_hash IS
    'Argon2id PHC string (OWASP: m=19456,t=2,p=1)';

CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION elearn_touch_updated_at();
