package counter

import (
	"context"
	"fmt"

	"socnet/internal/dbroute"
)

// DefaultMaxBacklog is the outbox backlog above which the relay alerts
// (docs/COUNTER.md, "Outbox bounds"): about 300 MB of outbox rows, an hour
// of catching up at worst.
const DefaultMaxBacklog = 1_000_000

// Backlog is an estimate of the outbox events not yet delivered.
type Backlog struct {
	// Events is max(id) - min(id) + 1 over the outbox: exact for the
	// usual contiguous backlog, an upper bound when events in between were
	// delivered out of order or their transactions rolled back; 0 when the
	// outbox is empty.
	Events int64 `json:"events"`
	// OldestSeconds is the age of the oldest undelivered event (0 when
	// none).
	OldestSeconds float64 `json:"oldest_seconds"`
}

// backlogSQL reads both ends of the outbox's primary key: two index probes,
// whatever the table's size, instead of a count over every row.
const backlogSQL = `SELECT coalesce(max(id) - min(id) + 1, 0),
	coalesce(extract(epoch FROM now() - (SELECT created_at FROM outbox ORDER BY id LIMIT 1))::float8, 0)
FROM outbox`

// OutboxBacklog estimates the backlog of the outbox on q, the dialogs
// primary (a replica's answer lags by its replay delay).
func OutboxBacklog(ctx context.Context, q dbroute.Querier) (Backlog, error) {
	var n int64
	var oldest float64
	if err := q.QueryRow(ctx, backlogSQL).Scan(&n, &oldest); err != nil {
		return Backlog{}, fmt.Errorf("outbox backlog: %w", err)
	}
	return Backlog{Events: n, OldestSeconds: max(oldest, 0)}, nil
}

// OutboxBacklogAt estimates the backlog of the outbox on the primary among
// dsns, the nodes of the dialogs database.
func OutboxBacklogAt(ctx context.Context, dsns []string) (Backlog, error) {
	conn, err := connectPrimary(ctx, dsns)
	if err != nil {
		return Backlog{}, fmt.Errorf("outbox backlog: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return OutboxBacklog(ctx, conn)
}
