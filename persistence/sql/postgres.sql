-- percore-persistence: the PostgreSQL journal, snapshot store and projection offsets.
--
-- The shape follows Akka Persistence JDBC. Every statement is idempotent: running the file
-- again (what `percore_persistence::pg::create_schema_if_missing` does) changes nothing.
-- Tables are created in the connection's current schema (the first one on its search_path).

-- The events. One row per event; (persistence_id, sequence_nr) is the single-writer guard:
-- a second writer for the same persistence id hits the primary key and nothing is overwritten.
CREATE TABLE IF NOT EXISTS percore_journal (
    -- Global ordering, assigned from percore_ordering under its row lock (see below), so that
    -- it increases in commit order: a reader never sees a larger ordering before a smaller one.
    ordering        BIGINT  NOT NULL,
    persistence_id  TEXT    NOT NULL,
    sequence_nr     BIGINT  NOT NULL,
    -- Which journal instance wrote it (a random id per PgJournal): who the writer was.
    writer          TEXT    NOT NULL,
    -- Milliseconds since the Unix epoch (the writer's clock).
    write_timestamp BIGINT  NOT NULL,
    -- Type tag / manifest of the event (reserved: percore's payload envelope carries its own
    -- format and schema version, see codec.rs).
    manifest        TEXT    NOT NULL DEFAULT '',
    -- The event: percore's payload envelope (postcard inside), as the file journal stores it.
    payload         BYTEA   NOT NULL,
    -- Deleted events are removed, except the highest of a stream, which is only marked, so
    -- that the sequence numbering continues after it.
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (persistence_id, sequence_nr)
);
-- No index on ordering: the read side finds tagged events through percore_event_tag (whose
-- primary key is (tag, ordering)) and an id's events through the primary key, and every index
-- costs each insert of a group commit. Add one if you query the journal by ordering:
--   CREATE UNIQUE INDEX percore_journal_ordering_idx ON percore_journal (ordering);

-- Tags of events (events_by_tag): one row per (event, tag), in the event's global ordering.
CREATE TABLE IF NOT EXISTS percore_event_tag (
    tag             TEXT   NOT NULL,
    ordering        BIGINT NOT NULL,
    persistence_id  TEXT   NOT NULL,
    sequence_nr     BIGINT NOT NULL,
    PRIMARY KEY (tag, ordering)
);

-- The global ordering counter: one row. Each group commit adds its event count to it in the
-- same statement that inserts the events; the row lock is held until the commit, so batches
-- from every writer (every process) get their ordering numbers in commit order, without gaps.
CREATE TABLE IF NOT EXISTS percore_ordering (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value BIGINT  NOT NULL
);
INSERT INTO percore_ordering (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

-- Snapshots: an actor's state at a sequence number.
CREATE TABLE IF NOT EXISTS percore_snapshot (
    persistence_id  TEXT   NOT NULL,
    sequence_nr     BIGINT NOT NULL,
    created         BIGINT NOT NULL,
    snapshot        BYTEA  NOT NULL,
    PRIMARY KEY (persistence_id, sequence_nr)
);

-- Offsets of projections (pg::Projection): the ordering of the last event handled.
CREATE TABLE IF NOT EXISTS percore_projection_offset (
    projection_name TEXT   PRIMARY KEY,
    ordering        BIGINT NOT NULL,
    updated         BIGINT NOT NULL
);
