-- The dialogs side of the unread-message counter (docs/COUNTER.md).
--
-- dialog_unread keeps, per direction of a dialog (user_id reads what peer_id
-- sends), the number of unread messages and a sequence number that grows by
-- one with every event about that direction. Every outbox event about unread
-- messages is stamped, while its transaction holds the direction's row lock,
-- with the direction's new (seq, unread): the exact state after that
-- transaction. The counter service keeps, per direction, the state with the
-- highest seq it has received, so events may arrive late, twice or out of
-- order without corrupting a count.

CREATE TABLE dialog_unread (
    user_id uuid    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    peer_id uuid    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq     bigint  NOT NULL CHECK (seq >= 0),
    unread  integer NOT NULL CHECK (unread >= 0),
    PRIMARY KEY (user_id, peer_id),
    CONSTRAINT dialog_unread_not_self CHECK (user_id <> peer_id)
);

-- Messages stored before this migration: their state is number 1 of each
-- direction.
INSERT INTO dialog_unread (user_id, peer_id, seq, unread)
SELECT to_user_id, from_user_id, 1, count(*) FILTER (WHERE read_at IS NULL)
FROM messages
GROUP BY to_user_id, from_user_id;

-- Undelivered events written before this migration carry that state.
UPDATE outbox o
SET payload = o.payload || jsonb_build_object('user_id', d.user_id, 'peer_id', d.peer_id, 'seq', d.seq, 'unread', d.unread)
FROM dialog_unread d
WHERE o.kind = 'message_sent'
  AND d.user_id = (o.payload->>'to')::uuid
  AND d.peer_id = (o.payload->>'from')::uuid;

-- Delivery bookkeeping of the relay: failed attempts of an event and when it
-- may be tried again (NULL: now).
ALTER TABLE outbox
    ADD COLUMN attempts        integer     NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN last_error      text;
-- Events waiting for a retry hold back the later events of their dialog.
CREATE INDEX outbox_retry_idx ON outbox (aggregate, id) WHERE next_attempt_at IS NOT NULL;

-- Events the relay gave up on after repeated failures, with the reason.
-- Their messages stay stored and listed; reconciliation repairs the counts.
CREATE TABLE outbox_dead_letters (
    id         bigint      PRIMARY KEY, -- the outbox id
    aggregate  text        NOT NULL,
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    attempts   integer     NOT NULL,
    reason     text        NOT NULL,
    dead_at    timestamptz NOT NULL DEFAULT now()
);

-- outbox_dead_letter moves the outbox events ids to outbox_dead_letters, each
-- with its reason and one more attempt, and returns how many it moved;
-- outbox_dead_letter_count counts the dead letters. They run as the owner,
-- so that a relay needs no more than its rights on outbox, and refuse a
-- caller who may not delete outbox rows anyway.
CREATE FUNCTION outbox_dead_letter(ids bigint[], reasons text[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    moved integer;
BEGIN
    IF NOT has_table_privilege(session_user, 'public.outbox', 'DELETE') THEN
        RAISE EXCEPTION 'permission denied to dead-letter outbox events' USING ERRCODE = 'insufficient_privilege';
    END IF;
    WITH f AS (
        SELECT * FROM unnest(ids, reasons) AS f(id, reason)
    ), d AS (
        DELETE FROM public.outbox o USING f WHERE o.id = f.id
        RETURNING o.id, o.aggregate, o.kind, o.payload, o.created_at, o.attempts, f.reason
    ), i AS (
        INSERT INTO public.outbox_dead_letters (id, aggregate, kind, payload, created_at, attempts, reason)
        SELECT id, aggregate, kind, payload, created_at, attempts + 1, reason FROM d
        ON CONFLICT (id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO moved FROM i;
    RETURN moved;
END
$$;

CREATE FUNCTION outbox_dead_letter_count() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM public.outbox_dead_letters
$$;

-- outbox_stamp_unread assigns the direction's next state to an event of kind
-- message_sent (payload from, to: one more unread), dialog_read (payload
-- user_id, peer_id, count: count fewer unread) or unread_reset (payload
-- user_id, peer_id, unread, optional seq_floor: exactly unread, with a seq
-- above seq_floor), and adds user_id, peer_id, seq and unread to the payload.
-- Other kinds pass unchanged. It runs as the owner of the tables, so the
-- application role needs no rights on dialog_unread; search_path is fixed so
-- that no caller's objects are used.
CREATE FUNCTION outbox_stamp_unread() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u uuid;
    p uuid;
    s bigint;
    n integer;
BEGIN
    IF NEW.kind = 'message_sent' THEN
        u := (NEW.payload->>'to')::uuid;
        p := (NEW.payload->>'from')::uuid;
        INSERT INTO public.dialog_unread AS d (user_id, peer_id, seq, unread)
        VALUES (u, p, 1, 1)
        ON CONFLICT (user_id, peer_id) DO UPDATE SET seq = d.seq + 1, unread = d.unread + 1
        RETURNING d.seq, d.unread INTO s, n;
    ELSIF NEW.kind = 'dialog_read' THEN
        u := (NEW.payload->>'user_id')::uuid;
        p := (NEW.payload->>'peer_id')::uuid;
        -- The count is exact (each message goes unread -> read once); the
        -- floor at 0 only matters if messages were stored without events,
        -- which reconciliation repairs.
        INSERT INTO public.dialog_unread AS d (user_id, peer_id, seq, unread)
        VALUES (u, p, 1, 0)
        ON CONFLICT (user_id, peer_id) DO UPDATE
            SET seq = d.seq + 1, unread = greatest(d.unread - (NEW.payload->>'count')::integer, 0)
        RETURNING d.seq, d.unread INTO s, n;
    ELSIF NEW.kind = 'unread_reset' THEN
        u := (NEW.payload->>'user_id')::uuid;
        p := (NEW.payload->>'peer_id')::uuid;
        n := (NEW.payload->>'unread')::integer;
        s := coalesce((NEW.payload->>'seq_floor')::bigint, 0) + 1;
        INSERT INTO public.dialog_unread AS d (user_id, peer_id, seq, unread)
        VALUES (u, p, s, n)
        ON CONFLICT (user_id, peer_id) DO UPDATE SET seq = greatest(d.seq + 1, EXCLUDED.seq), unread = EXCLUDED.unread
        RETURNING d.seq, d.unread INTO s, n;
    ELSE
        RETURN NEW;
    END IF;
    NEW.payload := NEW.payload || jsonb_build_object('user_id', u, 'peer_id', p, 'seq', s, 'unread', n);
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_stamp_unread BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_stamp_unread();
