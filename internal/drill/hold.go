package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/pglsn"
)

// Hold keeps one replica from receiving WAL: the primary's WAL sender that
// streams to it is stopped with SIGSTOP. Commits go on (the replica is not
// the synchronous one), so every write acknowledged while the hold lasts is
// on the primary and the synchronous replica and not on the held one:
// promoting it would lose them. The failover drill holds the asynchronous
// replica back before it kills the primary, so that its verdict can tell a
// promotion of the right replica from one of the wrong replica.
//
// Holding back the replay instead (recovery_min_apply_delay) would not do:
// a promotion replays every record the replica received, delay or not.
type Hold struct {
	// Node is the replica held back.
	Node string
	// Sender is the pid of the WAL sender on the primary that was stopped.
	Sender int
	// At is when the sender was stopped.
	At time.Time
}

// HoldBack stops the WAL sender that streams to replica, found through the
// replication slot the replica streams from (pg_stat_wal_receiver on the
// replica, pg_replication_slots on the primary). The caller must Release the
// hold; a SIGKILL of the primary ends it too, since the sender dies with its
// server.
func HoldBack(ctx context.Context, nodes []Node, replica string) (*Hold, error) {
	var prim, rep *Node
	for i := range nodes {
		switch {
		case nodes[i].Role == RolePrimary:
			prim = &nodes[i]
		case nodes[i].Name == replica:
			rep = &nodes[i]
		}
	}
	if prim == nil || rep == nil {
		return nil, fmt.Errorf("hold back %s: no primary, or no such replica", replica)
	}
	var slot *string
	err := withConn(ctx, rep.DSN, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT slot_name FROM pg_stat_wal_receiver WHERE status = 'streaming'`).Scan(&slot)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("hold back %s: the replica does not stream", replica)
	case err != nil:
		return nil, fmt.Errorf("hold back %s: %w", replica, err)
	case slot == nil || *slot == "":
		return nil, fmt.Errorf("hold back %s: the replica streams without a replication slot", replica)
	}
	var pid *int32
	err = withConn(ctx, prim.DSN, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, *slot).Scan(&pid)
	})
	if err != nil || pid == nil {
		return nil, fmt.Errorf("hold back %s: no WAL sender on %s for slot %s: %v", replica, prim.Name, *slot, err)
	}
	h := &Hold{Node: replica, Sender: int(*pid)}
	if !isWALSender(h.Sender) {
		return nil, fmt.Errorf("hold back %s: pid %d is not a WAL sender", replica, h.Sender)
	}
	if err := syscall.Kill(h.Sender, syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("hold back %s: SIGSTOP WAL sender %d: %w", replica, h.Sender, err)
	}
	h.At = time.Now()
	return h, nil
}

// Release lets the WAL sender run again (SIGCONT), unless it is gone.
func (h *Hold) Release() error {
	if h == nil || !isWALSender(h.Sender) {
		return nil
	}
	if err := syscall.Kill(h.Sender, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("release %s: SIGCONT WAL sender %d: %w", h.Node, h.Sender, err)
	}
	return nil
}

// isWALSender reports whether pid runs a PostgreSQL WAL sender, whose
// process title names it: a guard against signalling a reused pid.
func isWALSender(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(b), "walsender")
}

// ReceiveGap returns how many bytes of WAL the primary has written that
// replica has not received: what a promotion of the replica would lose at
// most, were the primary to die now.
func ReceiveGap(ctx context.Context, nodes []Node, replica string) (int64, error) {
	var current, received string
	for _, n := range nodes {
		var err error
		switch {
		case n.Role == RolePrimary:
			err = withConn(ctx, n.DSN, func(conn *pgx.Conn) error {
				return conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&current)
			})
		case n.Name == replica:
			err = withConn(ctx, n.DSN, func(conn *pgx.Conn) error {
				return conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_receive_lsn(), '0/0')::text`).Scan(&received)
			})
		}
		if err != nil {
			return 0, fmt.Errorf("receive gap of %s: %s: %w", replica, n.Name, err)
		}
	}
	cur, err := pglsn.Parse(current)
	if err != nil {
		return 0, fmt.Errorf("receive gap of %s: primary position: %w", replica, err)
	}
	rec, err := pglsn.Parse(received)
	if err != nil {
		return 0, fmt.Errorf("receive gap of %s: received position: %w", replica, err)
	}
	return max(cur.Minus(rec), 0), nil
}

// HeldBack is what the failover drill's hold of the asynchronous replica
// achieved by the kill.
type HeldBack struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// GapBytes is how far the replica's received WAL was behind the
	// primary's just before the kill.
	GapBytes int64 `json:"gap_bytes"`
	// AcknowledgedWhileHeld counts writes that started after the hold and
	// were acknowledged before the kill: none is on the held replica, so a
	// promotion of it would lose them all.
	AcknowledgedWhileHeld int `json:"acknowledged_while_held"`
}

// judge counts the writes a promotion of the held replica would have lost
// and records the hold in run; a hold that left the replica caught up is a
// problem, since the verdict could then not tell a wrong promotion.
func (h *HeldBack) judge(run *Run, attempts []Attempt, killedAt time.Time) {
	for _, a := range attempts {
		if a.Outcome == Acknowledged && a.Start.After(h.At) && a.End.Before(killedAt) {
			h.AcknowledgedWhileHeld++
		}
	}
	run.HeldBack = h
	if h.GapBytes == 0 || h.AcknowledgedWhileHeld == 0 {
		run.Problems = append(run.Problems, fmt.Sprintf(
			"the held-back replica %s was not behind at the kill (%d bytes, %d writes acknowledged while held): the verdict cannot tell a promotion of the wrong replica",
			h.Node, h.GapBytes, h.AcknowledgedWhileHeld))
	}
}
