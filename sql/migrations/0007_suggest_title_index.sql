-- suggest in title order without a sort.
--
-- 0002 indexed lower(title) with text_pattern_ops: it serves the LIKE
-- prefix, but cannot return rows in ORDER BY order, so a common prefix
-- ("intro") sorted thousands of matches to keep 8 (~25 ms on the full demo
-- data).  A btree under COLLATE "C" does both: LIKE prefix ranges are valid
-- in "C" (the cluster's C.UTF-8 is not "C", hence the explicit collation),
-- and the index order is the ORDER BY of the suggest query.
DROP INDEX courses_title_prefix_idx;
CREATE INDEX courses_title_prefix_idx
    ON courses ((lower(title) COLLATE "C"), course_id) WHERE published;
