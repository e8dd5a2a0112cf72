-- Run once by the postgres image on a new volume: Dagster's own storage beside docpipe's
-- database. docpipe's schema (and the vector extension) come from `docpipe db migrate`.
CREATE DATABASE docpipe_dagster;
