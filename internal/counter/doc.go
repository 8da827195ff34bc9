// Package counter is the unread-message counter service of socnet and the
// distributed transaction that keeps it exact against the dialogs:
//
//   - Store applies counter events idempotently (an inbox of event ids in the
//     same transaction as the counter change) and reads counters through
//     dbroute, from a replica fresh enough for the caller;
//   - NewServer is counterd's HTTP API (POST /events, GET /counters/{id},
//     /healthz, /metrics) and Run the whole counterd process;
//   - Client is how the API and the relay talk to counterd;
//   - Relay moves the transactional outbox of the dialogs database to
//     counterd: at least once, in order per dialog, with retries, backoff and
//     a dead-letter table for events that keep failing;
//   - Reconciler recomputes counters from the dialogs database at an outbox
//     watermark, reports drift and repairs it.
//
// Correctness does not rest on delivery order: every event carries the
// direction's complete state (seq, unread) as of its transaction, and the
// counter keeps the state with the highest seq. docs/COUNTER.md tells the
// whole saga.
//
// The SQL here touches the dialogs database only through the outbox, the
// dead-letter table and dialog_unread (internal/postgres migration 0003);
// messages are written by internal/postgres alone.
package counter
