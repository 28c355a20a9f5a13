-- flows-db migrations 0004 and 0006 over schema_2026_01.sql: what production looks like
-- after the regions migration (written from the migrations' description, not copied). Same
-- placeholders as schema_2026_01.sql; run as @OWNER@.

-- 0004: when the meter clock drift was last measured or corrected.
ALTER TABLE flows.meter_shadows ADD COLUMN clock_time_diff_synced_at timestamptz;

-- 0006: Ofgem price-cap regions, the ESCOs' region, row-level security on both tables
-- (a read policy only for regions: roles that neither own escos nor bypass RLS see no ESCO).
CREATE TABLE flows.regions (
    code text NOT NULL,
    name text NOT NULL,
    CONSTRAINT regions_pkey PRIMARY KEY (code)
);
COMMENT ON TABLE flows.regions IS 'UK regions of the Ofgem energy price caps.';
ALTER TABLE flows.escos ADD COLUMN region text;
CREATE INDEX escos_region_idx ON flows.escos (region);
ALTER TABLE flows.escos ADD CONSTRAINT esco_region_fkey
    FOREIGN KEY (region) REFERENCES flows.regions (code)
    ON UPDATE RESTRICT ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE flows.escos ENABLE ROW LEVEL SECURITY;
CREATE POLICY regions_read ON flows.regions FOR SELECT USING (true);
ALTER TABLE flows.regions ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE, DELETE ON flows.regions TO @APP@;
GRANT SELECT ON flows.regions TO @READER@;
INSERT INTO flows.regions (code, name) VALUES
    ('south_west', 'South West'), ('south_east', 'South East'), ('london', 'London');
UPDATE flows.escos SET region = 'south_west' WHERE code IN ('wlce', 'hmce', 'bec', 'bpc', 'lab');
