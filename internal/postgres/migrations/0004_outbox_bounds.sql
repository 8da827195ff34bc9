-- Bounds of the outbox and of the unread states it carries
-- (docs/COUNTER.md, "Bounds" and "Outbox bounds").

-- The relay deletes every event it delivered: vacuum the outbox after a
-- thousand dead rows, whatever its size, and without throttling, so that
-- the relay's polling and statistics read live rows, not what was delivered.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- A seq above 2^53 (counter.MaxSeq) can only come from a repair of a forged
-- counter: start those directions over, below the bound. Reconciliation
-- then writes their truth with an ordinary seq.
UPDATE dialog_unread SET seq = 0 WHERE seq > 9007199254740992;

-- outbox_stamp_unread as in 0003, except that an unread_reset's seq_floor
-- saturates below 2^53 instead of overflowing bigint.
CREATE OR REPLACE FUNCTION outbox_stamp_unread() RETURNS trigger
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
        INSERT INTO public.dialog_unread AS d (user_id, peer_id, seq, unread)
        VALUES (u, p, 1, 0)
        ON CONFLICT (user_id, peer_id) DO UPDATE
            SET seq = d.seq + 1, unread = greatest(d.unread - (NEW.payload->>'count')::integer, 0)
        RETURNING d.seq, d.unread INTO s, n;
    ELSIF NEW.kind = 'unread_reset' THEN
        u := (NEW.payload->>'user_id')::uuid;
        p := (NEW.payload->>'peer_id')::uuid;
        n := (NEW.payload->>'unread')::integer;
        s := least(greatest(coalesce((NEW.payload->>'seq_floor')::numeric, 0), 0), 9007199254740991)::bigint + 1;
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
