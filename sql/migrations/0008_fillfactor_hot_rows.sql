-- Room for HOT updates on the rows the daemons rewrite all day.
--
-- course_analytics_summary gets an UPDATE per consumed event and
-- transcode_jobs one per progress tick; neither changes an indexed column
-- on those updates, so with free space on the page the new row version
-- stays on the same page and no index is touched (a HOT update).  At the
-- default fillfactor of 100 a full page forces every update to move the
-- row and add index entries.  Applies to pages written from now on (the
-- demo loader rewrites everything anyway).
ALTER TABLE course_analytics_summary SET (fillfactor = 80);
ALTER TABLE transcode_jobs SET (fillfactor = 90);
