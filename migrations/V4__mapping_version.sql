-- The version of the rules that turned `raw` into a portal table's columns (see the
-- README, "How the schema evolves"). A table created before versions were recorded was
-- filled under version 1, which stored a date field's local date part (a day early west
-- of UTC) and a multiple date field's strings as sent; the store re-derives the columns
-- whose rules changed from `raw` once, in its resumable batches, and then records its
-- current version. The store names the version of every table it registers; the default
-- covers rows written without one (by a version that predates this migration).
ALTER TABLE _mirror_tables ADD COLUMN mapping_version integer NOT NULL DEFAULT 1;
