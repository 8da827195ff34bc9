-- Bound seq to what the dialogs database can produce (counter.MaxSeq = 2^53,
-- docs/COUNTER.md "Bounds"). A counter above it can only come from a forged
-- event: it is removed, and reconciliation writes the direction's truth back
-- with an ordinary seq. Its inbox rows stay: they only mark event ids as seen.
DELETE FROM counters WHERE seq > 9007199254740992;
ALTER TABLE counters ADD CONSTRAINT counters_seq_bound CHECK (seq <= 9007199254740992);
