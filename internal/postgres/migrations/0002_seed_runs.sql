-- Bookkeeping of internal/seed: how far each bulk load has come. Rows
-- [0, done) of a run are in users; a batch and its advance of done commit in
-- one transaction, so a load resumes exactly where it stopped.
CREATE TABLE seed_runs (
    seed       bigint      PRIMARY KEY,
    source     text        NOT NULL,
    target     integer     NOT NULL CHECK (target >= 0),
    done       integer     NOT NULL CHECK (done >= 0 AND done <= target),
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
