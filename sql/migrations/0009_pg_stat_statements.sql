-- pg_stat_statements: per-statement call counts, used by the cache
-- stampede test (tests/integration/test_cache.py) and for finding slow
-- statements.  The library is preloaded by tools/stack.sh
-- (shared_preload_libraries); creating the extension needs a superuser,
-- which the dev stack's role is.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
