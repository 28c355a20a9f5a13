-- Migration 116: projection snapshots, so that a replay or a verify can start from a known
-- position instead of position 0 (the log's old partitions may be detached, see migration
-- 115). A snapshot of a projection is its rebuild state (the shadow table a replay builds,
-- flowsd.projections.rebuild) at `position`, kept as a table in schema flowsd; a replay from it
-- copies it and adds only the events after `position`. Made by `flowsd snapshot`.

CREATE TABLE IF NOT EXISTS flowsd.projection_snapshot (
    projection text NOT NULL,
    position bigint NOT NULL CHECK (position >= 0),
    table_name text NOT NULL UNIQUE,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
COMMENT ON TABLE flowsd.projection_snapshot IS
    'Rebuild states of projections at a log position (table_name, in schema flowsd): '
    '`flowsd replay --from-snapshot` and `flowsd verify --from-snapshot` start there.';

GRANT SELECT ON flowsd.projection_snapshot TO flowsd_reader, flowsd_writer;
