-- The counter service's own database: unread counters per direction of a
-- dialog and the inbox that makes applying events idempotent.

-- counters holds, per direction (user_id reads what peer_id sends), the state
-- with the highest seq received from the dialogs database.
CREATE TABLE counters (
    user_id    uuid        NOT NULL,
    peer_id    uuid        NOT NULL,
    unread     integer     NOT NULL CHECK (unread >= 0),
    seq        bigint      NOT NULL CHECK (seq >= 1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, peer_id),
    CONSTRAINT counters_not_self CHECK (user_id <> peer_id)
);

-- inbox remembers every event received, written in the same transaction as
-- the counter change, so that a redelivered event is recognized and skipped.
-- Rows older than the retention are pruned: a very late redelivery is then
-- still harmless, because its seq is not above the applied one.
CREATE TABLE inbox (
    event_id    uuid        PRIMARY KEY,
    outbox_id   bigint      NOT NULL,
    kind        text        NOT NULL,
    user_id     uuid        NOT NULL,
    peer_id     uuid        NOT NULL,
    seq         bigint      NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('applied', 'stale')),
    -- When the dialogs transaction that wrote the event started, and when
    -- counterd applied it: the delivery latency of each event.
    committed_at timestamptz,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_received_at_idx ON inbox (received_at);
