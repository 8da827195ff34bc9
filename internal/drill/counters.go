package drill

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"socnet/internal/counter"
)

// Defaults of a CounterCheck.
const (
	DefaultCounterTimeout = 30 * time.Second
	DefaultCounterPoll    = 200 * time.Millisecond
)

// ReadClockSlack widens the window in which an acknowledged read mark's
// event must have committed (the dialogs transaction's start, as the inbox
// records it): the drill and the database share the machine's clock, and
// the database keeps microseconds.
const ReadClockSlack = time.Millisecond

// Reconciler is the reconciliation a counter check runs afterwards:
// *counter.Reconciler.
type Reconciler interface {
	Run(ctx context.Context, opts counter.ReconcileOptions) (counter.ReconcileReport, error)
}

var _ Reconciler = (*counter.Reconciler)(nil)

// CounterCheck checks, once a drill's dialog messages are verified, that
// the counter service lost nothing and counts exactly the unread messages.
// Once the outbox holds no event about the DialogWriter's recipient, every
// state of the recipient's dialogs (each event's seq, 1 to the last one the
// main database recorded, bar dead letters) must be in the inbox of the
// counter primary, the node that replaced a killed one: a final count
// alone would hide a lost event that a later one of its dialog overtook.
// Then, per sender, the count the API answers (GET /dialog/unread, served
// by the counter service) must equal the unread messages from that sender
// in the main database, and a reconciliation of every counter must find no
// drift. Every read mark the DialogWriter had acknowledged must be on the
// counter primary too (JudgeReads). Only after that does each sender send
// one more message, which the counters must count.
type CounterCheck struct {
	// Dialogs is the writer whose recipient is checked.
	Dialogs *DialogWriter
	// Counter is the counter cluster, whose primary's inbox is checked;
	// nil: the inbox is not checked.
	Counter Cluster
	// Reconciler, when set, runs a reconciliation that only reports
	// (counter.ReconcileOptions{Repair: false}).
	Reconciler Reconciler
	// Timeout bounds the wait for the outbox to drain and then for the
	// counters to agree (together), and the reconciliation's own wait for
	// the outbox; default DefaultCounterTimeout.
	Timeout time.Duration
	// Poll is how often the outbox and the counters are asked; default
	// DefaultCounterPoll.
	Poll time.Duration
}

// DialogCount is one dialog's unread count on both sides of the saga.
type DialogCount struct {
	// Sender is the user whose messages are counted.
	Sender string `json:"sender"`
	// Counter is the counter service's count, Unread the unread messages
	// in the main database.
	Counter int `json:"counter"`
	Unread  int `json:"unread"`
	// Drift is Counter - Unread; must be 0.
	Drift int `json:"drift"`
}

// ReconcileCheck is what the reconciliation after a drill found.
type ReconcileCheck struct {
	// Compared counts the directions compared (every counter, not only
	// the drill's); Unsettled those whose events were still in flight.
	Compared  int `json:"compared"`
	Unsettled int `json:"unsettled"`
	// Drift counts drifting directions, DriftMessages the messages they
	// are off by in all; both must be 0.
	Drift         int `json:"drift"`
	DriftMessages int `json:"drift_messages"`
	// Error says why the reconciliation could not run.
	Error string `json:"error,omitempty"`
}

// CounterVerdict is the verdict on the counters of a drill's dialogs.
type CounterVerdict struct {
	// Recipient is the user whose counters were checked.
	Recipient string `json:"recipient"`
	// DialogsChecked counts the dialogs compared (one per sender).
	DialogsChecked int `json:"dialogs_checked"`
	// Drift counts dialogs whose count differs from the unread messages,
	// DriftMessages the messages they are off by in all; both must be 0.
	Drift         int           `json:"drift"`
	DriftMessages int           `json:"drift_messages"`
	Dialogs       []DialogCount `json:"dialogs"`
	// DrainedMS is from the writers' stop to the outbox holding no event
	// about the recipient; null when it did not drain in time.
	DrainedMS *float64 `json:"drained_ms"`
	// SettledMS is from the writers' stop to the counters first agreeing
	// with the messages; null when they never did in time.
	SettledMS *float64 `json:"settled_ms"`
	// DeadLetters counts the recipient's events the relay gave up on.
	DeadLetters int `json:"dead_letters"`
	// Inbox is what the counter primary's inbox holds of the recipient's
	// dialogs; nil when it was not checked (no counter cluster, or the
	// outbox did not drain).
	Inbox *InboxVerdict `json:"inbox,omitempty"`
	// Reads is what the counter primary holds of the recipient's read
	// marks; nil when the inbox was not checked.
	Reads *ReadVerdict `json:"reads,omitempty"`
	// Reconcile is the reconciliation's finding; nil when none ran.
	Reconcile *ReconcileCheck `json:"reconcile,omitempty"`
	// FinalMessages counts the messages sent after the checks, one per
	// sender; FinalSettledMS is from their sending to the counters agreeing
	// with the messages again, null when they did not in time.
	FinalMessages  int      `json:"final_messages"`
	FinalSettledMS *float64 `json:"final_settled_ms"`
	// Problems lists, one sentence each, what fails the check.
	Problems []string `json:"problems"`
}

// InboxVerdict is what the counter primary's inbox holds of the states of
// the recipient's dialogs.
type InboxVerdict struct {
	// Primary is the counter node read: the primary at the time of the
	// check.
	Primary string `json:"primary"`
	// States counts the states that must be there; Lost lists those that
	// are not (must be empty).
	States int         `json:"states"`
	Lost   []LostEvent `json:"lost"`
}

// ReadVerdict is what the counter primary holds of the read marks the
// recipient sent.
type ReadVerdict struct {
	// Primary is the counter node read.
	Primary string `json:"primary"`
	// Sent counts the read marks sent, Acknowledged those answered with
	// a success: each of these must be reflected. Lost lists what is not
	// (must be empty).
	Sent         int        `json:"sent"`
	Acknowledged int        `json:"acknowledged"`
	Lost         []LostRead `json:"lost"`
}

// LostRead is an acknowledged read mark that the counter database does not
// reflect.
type LostRead struct {
	ReadMark
	// User is the reader, the recipient.
	User string `json:"user_id"`
	// Seq is the state the read mark produced, when its event was found.
	Seq int64 `json:"seq,omitempty"`
	// Reason says what is missing.
	Reason string `json:"reason"`
}

// String describes the loss in one line.
func (l LostRead) String() string {
	at := l.Start.UTC().Format("15:04:05.000000")
	state := ""
	if l.Seq > 0 {
		state = fmt.Sprintf(", seq %d", l.Seq)
	}
	return fmt.Sprintf("read mark of user %s reading %s sent at %s (answered after %v)%s: %s",
		l.User, l.Peer, at, l.End.Sub(l.Start).Round(time.Millisecond), state, l.Reason)
}

// JudgeReads returns the acknowledged read marks of marks, made by user,
// that in does not reflect. An acknowledged read mark committed, while it
// was in flight (Start to End, widened by ReadClockSlack), a dialog_read
// event of its direction, which counterd recorded before the API answered
// (and the relay again later, a duplicate): so one such event per read mark
// must be in the inbox, each event standing for one read mark only, and
// the counter must hold its state or a later one. And since a read mark
// marks read every message acknowledged before it was sent, the counter of
// a direction may hold no more unread than the messages of the direction
// (messages, by peer, counted in the dialogs database) less those
// acknowledged before its last read mark. Marks not acknowledged are not
// judged. The result is ordered by peer and start.
func JudgeReads(user string, marks []ReadMark, messages map[string]int, in Inbox) []LostRead {
	byPeer := map[string][]ReadMark{}
	for _, m := range marks {
		if m.Outcome == Acknowledged {
			byPeer[m.Peer] = append(byPeer[m.Peer], m)
		}
	}
	lost := []LostRead{}
	for peer, ms := range byPeer {
		d := Direction{User: user, Peer: peer}
		var events []InboxEvent
		for _, e := range in.Events {
			if e.Direction == d && e.Kind == counter.KindDialogRead && !e.CommittedAt.IsZero() {
				events = append(events, e)
			}
		}
		slices.SortFunc(events, func(a, b InboxEvent) int { return a.CommittedAt.Compare(b.CommittedAt) })
		// Each read mark takes the earliest free event in its window, the
		// read marks that end first choosing first: this pairs as many as
		// any pairing of windows and points can.
		slices.SortFunc(ms, func(a, b ReadMark) int { return cmp.Or(a.End.Compare(b.End), a.Start.Compare(b.Start)) })
		used := make([]bool, len(events))
		c, counted := in.Counters[d]
		last := ms[0]
		for _, m := range ms {
			if m.SentBefore >= last.SentBefore {
				last = m
			}
			lo, hi := m.Start.Add(-ReadClockSlack), m.End.Add(ReadClockSlack)
			j := -1
			for k, e := range events {
				if e.CommittedAt.After(hi) {
					break
				}
				if !used[k] && !e.CommittedAt.Before(lo) {
					j = k
					break
				}
			}
			if j < 0 {
				lost = append(lost, LostRead{ReadMark: m, User: user,
					Reason: "no dialog_read event of its dialog committed while it was in flight is in the inbox"})
				continue
			}
			used[j] = true
			if e := events[j]; !counted || c.Seq < e.Seq {
				lost = append(lost, LostRead{ReadMark: m, User: user, Seq: e.Seq,
					Reason: fmt.Sprintf("the counter holds seq %d, older than the read mark's state", c.Seq)})
			}
		}
		if allowed := max(messages[peer]-last.SentBefore, 0); counted && c.Unread > allowed {
			lost = append(lost, LostRead{ReadMark: last, User: user,
				Reason: fmt.Sprintf("the counter holds %d unread (seq %d), more than the %d message(s) of the dialog not acknowledged before the read mark",
					c.Unread, c.Seq, allowed)})
		}
	}
	slices.SortFunc(lost, func(a, b LostRead) int {
		return cmp.Or(strings.Compare(a.Peer, b.Peer), a.Start.Compare(b.Start), strings.Compare(a.Reason, b.Reason))
	})
	return lost
}

// JudgeCounters compares the counter service's counts with the unread
// messages, by sender: every sender of senders, then any other peer either
// side lists. A peer missing from a side counts 0 there.
func JudgeCounters(senders []string, counters, unread map[string]int) (dialogs []DialogCount, drift, driftMessages int) {
	peers := slices.Clone(senders)
	var others []string
	for _, m := range []map[string]int{counters, unread} {
		for p := range m {
			if !slices.Contains(peers, p) && !slices.Contains(others, p) {
				others = append(others, p)
			}
		}
	}
	slices.Sort(others)
	peers = append(peers, others...)
	dialogs = make([]DialogCount, 0, len(peers))
	for _, p := range peers {
		d := DialogCount{Sender: p, Counter: counters[p], Unread: unread[p]}
		d.Drift = d.Counter - d.Unread
		if d.Drift != 0 {
			drift++
			driftMessages += max(d.Drift, -d.Drift)
		}
		dialogs = append(dialogs, d)
	}
	return dialogs, drift, driftMessages
}

// Check runs the check against the main cluster (where the messages and
// the outbox live); stopped is when the writers stopped. What it finds,
// failures to read included, is in the verdict's Problems.
func (c *CounterCheck) Check(ctx context.Context, main Cluster, stopped time.Time) CounterVerdict {
	timeout, poll := c.Timeout, c.Poll
	setDefault(&timeout, DefaultCounterTimeout)
	setDefault(&poll, DefaultCounterPoll)
	v := CounterVerdict{Recipient: c.Dialogs.Recipient(), Dialogs: []DialogCount{}, Problems: []string{}}
	if v.Recipient == "" {
		v.Problems = append(v.Problems, "counters: the drill's dialog users were never signed up")
		return v
	}
	deadline := time.Now().Add(timeout)
	// A read mark still in flight ends first: its event is then one the
	// outbox must drain of.
	marks, err := c.Dialogs.ReadMarks(ctx)
	if err != nil {
		v.Problems = append(v.Problems, "counters: "+err.Error())
	}
	err = onPrimary(ctx, main, func(conn *pgx.Conn) error {
		return c.compare(ctx, conn, &v, marks, stopped, deadline, poll)
	})
	if err != nil {
		v.Problems = append(v.Problems, "counters: "+err.Error())
	}
	if c.Reconciler != nil {
		v.Reconcile = c.reconcile(ctx, timeout)
		switch r := v.Reconcile; {
		case r.Error != "":
			v.Problems = append(v.Problems, "reconciliation failed: "+r.Error)
		case r.Drift > 0:
			v.Problems = append(v.Problems, fmt.Sprintf("reconciliation found %d drifting dialog(s), off by %d message(s)", r.Drift, r.DriftMessages))
		}
	}
	// The last messages come after the checks: before, they would hide a
	// lost event of their dialog from the counts.
	err = onPrimary(ctx, main, func(conn *pgx.Conn) error {
		return c.final(ctx, conn, &v, time.Now().Add(timeout), poll)
	})
	if err != nil {
		v.Problems = append(v.Problems, "counters after the final messages: "+err.Error())
	}
	return v
}

// final sends one message from each sender and waits, until deadline, for
// the counters to count them.
func (c *CounterCheck) final(ctx context.Context, conn *pgx.Conn, v *CounterVerdict, deadline time.Time, poll time.Duration) error {
	to, from, err := c.Dialogs.users(ctx)
	if err != nil {
		return err
	}
	sent := time.Now()
	for _, u := range from {
		res, body := c.Dialogs.send(ctx, u, to, "the last message, after the counter check")
		if res.Outcome != Acknowledged {
			return fmt.Errorf("send the final message of sender %s: %s", u.id, strings.TrimSpace(res.Error+" "+body))
		}
		v.FinalMessages++
	}
	var last []DialogCount
	err = pollUntil(ctx, deadline, poll, func() (bool, error) {
		unread, err := messagesBySender(ctx, conn, to.id, true)
		if err != nil {
			return false, err
		}
		counters, err := c.Dialogs.Unread(ctx)
		if err != nil {
			return false, nil // the counter service may be catching up
		}
		var drift int
		last, drift, _ = JudgeCounters(c.Dialogs.Senders(), counters, unread)
		return drift == 0, nil
	})
	if err != nil {
		var off []string
		for _, d := range last {
			if d.Drift != 0 {
				off = append(off, fmt.Sprintf("sender %s counted %d, unread %d", d.Sender, d.Counter, d.Unread))
			}
		}
		return fmt.Errorf("the counters did not count the final message of each dialog (%w): %s", err, strings.Join(off, "; "))
	}
	v.FinalSettledMS = msPtr(time.Since(sent))
	return nil
}

// compare waits for the outbox to drain of the recipient's events, then
// for the counters to agree with the unread messages, until deadline, and
// records what it saw last.
func (c *CounterCheck) compare(ctx context.Context, conn *pgx.Conn, v *CounterVerdict, marks []ReadMark, stopped, deadline time.Time, poll time.Duration) error {
	pending := -1
	err := pollUntil(ctx, deadline, poll, func() (bool, error) {
		err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE payload->>'user_id' = $1`, v.Recipient).Scan(&pending)
		return err == nil && pending == 0, err
	})
	switch {
	case err == nil:
		v.DrainedMS = msPtr(time.Since(stopped))
	case pending > 0:
		v.Problems = append(v.Problems, fmt.Sprintf("counters: the outbox still holds %d event(s) about the recipient %v after the writers stopped",
			pending, time.Since(stopped).Round(time.Second)))
	default:
		return fmt.Errorf("read the outbox: %w", err)
	}

	err = conn.QueryRow(ctx, `SELECT count(*) FROM outbox_dead_letters WHERE payload->>'user_id' = $1`, v.Recipient).Scan(&v.DeadLetters)
	if err != nil {
		return fmt.Errorf("count dead letters: %w", err)
	}
	if pending == 0 && c.Counter != nil {
		if err := c.checkInbox(ctx, conn, v, marks); err != nil {
			v.Problems = append(v.Problems, "counters: check the inbox: "+err.Error())
		}
	}

	senders := c.Dialogs.Senders()
	var apiErr error
	err = pollUntil(ctx, deadline, poll, func() (bool, error) {
		unread, err := messagesBySender(ctx, conn, v.Recipient, true)
		if err != nil {
			return false, err
		}
		counters, err := c.Dialogs.Unread(ctx)
		if apiErr = err; err != nil {
			return false, nil // the counter service may be catching up
		}
		v.Dialogs, v.Drift, v.DriftMessages = JudgeCounters(senders, counters, unread)
		v.DialogsChecked = len(v.Dialogs)
		return v.Drift == 0, nil
	})
	switch {
	case err == nil:
		v.SettledMS = msPtr(time.Since(stopped))
		return nil
	case v.DialogsChecked == 0 && apiErr != nil:
		return fmt.Errorf("read the counter service: %w", apiErr)
	case v.DialogsChecked == 0:
		return fmt.Errorf("read the unread messages: %w", err)
	}
	var off []string
	for _, d := range v.Dialogs {
		if d.Drift != 0 {
			off = append(off, fmt.Sprintf("sender %s counted %d, unread %d", d.Sender, d.Counter, d.Unread))
		}
	}
	v.Problems = append(v.Problems, fmt.Sprintf("counter drift in %d of %d dialog(s) of the recipient, %d message(s) in all: %s",
		v.Drift, v.DialogsChecked, v.DriftMessages, strings.Join(off, "; ")))
	return nil
}

// checkInbox compares the states the main database recorded for the
// recipient's dialogs, and the recipient's acknowledged read marks, with the
// inbox and the counters of the counter primary.
func (c *CounterCheck) checkInbox(ctx context.Context, conn *pgx.Conn, v *CounterVerdict, marks []ReadMark) error {
	recorded := map[Direction]int64{}
	rows, err := conn.Query(ctx, `SELECT peer_id::text, seq FROM dialog_unread WHERE user_id = $1`, v.Recipient)
	if err != nil {
		return fmt.Errorf("read the recorded states: %w", err)
	}
	var peer string
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&peer, &seq}, func() error {
		recorded[Direction{User: v.Recipient, Peer: peer}] = seq
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the recorded states: %w", err)
	}
	dead := map[Direction][]int64{}
	rows, err = conn.Query(ctx, `SELECT payload->>'peer_id', (payload->>'seq')::bigint FROM outbox_dead_letters
		WHERE payload->>'user_id' = $1 AND jsonb_typeof(payload->'seq') = 'number'`, v.Recipient)
	if err != nil {
		return fmt.Errorf("read the dead letters: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&peer, &seq}, func() error {
		d := Direction{User: v.Recipient, Peer: peer}
		dead[d] = append(dead[d], seq)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the dead letters: %w", err)
	}
	messages, err := messagesBySender(ctx, conn, v.Recipient, false)
	if err != nil {
		return fmt.Errorf("count the messages: %w", err)
	}
	primary, err := primaryNode(ctx, c.Counter)
	if err != nil {
		return err
	}
	var in Inbox
	err = withConn(ctx, primary.DSN, func(cc *pgx.Conn) error {
		in, err = ReadInbox(ctx, cc, []string{v.Recipient})
		return err
	})
	if err != nil {
		return fmt.Errorf("counter primary %s: %w", primary.Name, err)
	}
	iv := &InboxVerdict{Primary: primary.Name, Lost: JudgeStates(recorded, dead, in)}
	for d, last := range recorded {
		iv.States += int(last) - len(dead[d])
	}
	v.Inbox = iv
	if len(iv.Lost) > 0 {
		lost := make([]string, 0, min(len(iv.Lost), 10))
		for _, l := range iv.Lost[:min(len(iv.Lost), 10)] {
			lost = append(lost, l.String())
		}
		v.Problems = append(v.Problems, fmt.Sprintf("counter primary %s lost %d of the %d states of the recipient's dialogs: %s",
			primary.Name, len(iv.Lost), iv.States, strings.Join(lost, "; ")))
	}

	rv := &ReadVerdict{Primary: primary.Name, Sent: len(marks), Lost: JudgeReads(v.Recipient, marks, messages, in)}
	for _, m := range marks {
		if m.Outcome == Acknowledged {
			rv.Acknowledged++
		}
	}
	v.Reads = rv
	if len(rv.Lost) > 0 {
		lost := make([]string, 0, min(len(rv.Lost), 10))
		for _, l := range rv.Lost[:min(len(rv.Lost), 10)] {
			lost = append(lost, l.String())
		}
		v.Problems = append(v.Problems, fmt.Sprintf("counter primary %s does not reflect %d of the %d acknowledged read marks of the recipient: %s",
			primary.Name, len(rv.Lost), rv.Acknowledged, strings.Join(lost, "; ")))
	}
	return nil
}

// reconcile runs the reconciliation in report-only mode.
func (c *CounterCheck) reconcile(ctx context.Context, drain time.Duration) *ReconcileCheck {
	rep, err := c.Reconciler.Run(ctx, counter.ReconcileOptions{Repair: false, DrainTimeout: drain})
	if err != nil {
		return &ReconcileCheck{Error: err.Error()}
	}
	return &ReconcileCheck{Compared: rep.Compared, Unsettled: rep.Unsettled, Drift: len(rep.Drifts), DriftMessages: rep.DriftMessages()}
}

// messagesBySender counts the messages to recipient by sender: the unread
// ones only when unread is set.
func messagesBySender(ctx context.Context, conn *pgx.Conn, recipient string, unread bool) (map[string]int, error) {
	rows, err := conn.Query(ctx, `SELECT from_user_id::text, count(*) FROM messages
		WHERE to_user_id = $1 AND (NOT $2 OR read_at IS NULL) GROUP BY from_user_id`, recipient, unread)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	var peer string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&peer, &n}, func() error {
		out[peer] = n
		return nil
	})
	return out, err
}

// onPrimary calls fn with a connection to the cluster's primary.
func onPrimary(ctx context.Context, c Cluster, fn func(*pgx.Conn) error) error {
	n, err := primaryNode(ctx, c)
	if err != nil {
		return err
	}
	return withConn(ctx, n.DSN, fn)
}

// primaryNode returns the cluster's primary.
func primaryNode(ctx context.Context, c Cluster) (Node, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return Node{}, fmt.Errorf("list the nodes of %s: %w", c.Name(), err)
	}
	for _, n := range nodes {
		if n.Role == RolePrimary && n.DSN != "" {
			return n, nil
		}
	}
	return Node{}, fmt.Errorf("cluster %s has no primary", c.Name())
}

// errNotYet is the error of a poll that ran out of time while its
// condition had not come true yet, without an error.
var errNotYet = errors.New("not yet")

// pollUntil calls done at once and then every poll until it reports true
// or deadline passes; it returns nil when done did, else done's last error
// (errNotYet when there was none), or ctx's.
func pollUntil(ctx context.Context, deadline time.Time, poll time.Duration, done func() (bool, error)) error {
	for {
		ok, err := done()
		if ok {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !time.Now().Add(poll).Before(deadline) {
			if err == nil {
				err = errNotYet
			}
			return err
		}
		if err := sleepCtx(ctx, poll); err != nil {
			return err
		}
	}
}

// Direction is one direction of a dialog: User reads what Peer sends.
type Direction struct {
	User string `json:"user_id"`
	Peer string `json:"peer_id"`
}

// InboxQuerier reads the counter database: a *pgx.Conn, a *pgxpool.Pool or
// a dbroute.Querier.
type InboxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// InboxEvent is one event in the counter service's inbox.
type InboxEvent struct {
	Direction
	Kind string
	Seq  int64
	// CommittedAt is when the dialogs transaction that wrote the event
	// started; zero when the inbox does not know.
	CommittedAt time.Time
}

// CounterState is the state a counter holds: the unread count of the
// event with the highest seq applied.
type CounterState struct {
	Seq    int64
	Unread int
}

// Inbox is what a counter database holds for some readers: every event
// its inbox recorded, by event id, and every counter.
type Inbox struct {
	Events   map[string]InboxEvent
	Counters map[Direction]CounterState
}

// ReadInbox reads the inbox and the counters of the directions whose reader
// is one of users (every direction when users is empty) from the counter
// database q. Read it on the counter primary: a replica may lack
// acknowledged applies.
func ReadInbox(ctx context.Context, q InboxQuerier, users []string) (Inbox, error) {
	if users == nil {
		users = []string{}
	}
	in := Inbox{Events: map[string]InboxEvent{}, Counters: map[Direction]CounterState{}}
	rows, err := q.Query(ctx, `SELECT event_id::text, kind, user_id::text, peer_id::text, seq, committed_at FROM inbox
		WHERE cardinality($1::uuid[]) = 0 OR user_id = ANY($1::uuid[])`, users)
	if err != nil {
		return Inbox{}, fmt.Errorf("read the inbox: %w", err)
	}
	var id string
	var e InboxEvent
	var committed *time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &e.Kind, &e.User, &e.Peer, &e.Seq, &committed}, func() error {
		e.CommittedAt = time.Time{}
		if committed != nil {
			e.CommittedAt = *committed
		}
		in.Events[id] = e
		return nil
	})
	if err != nil {
		return Inbox{}, fmt.Errorf("read the inbox: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT user_id::text, peer_id::text, seq, unread FROM counters
		WHERE cardinality($1::uuid[]) = 0 OR user_id = ANY($1::uuid[])`, users)
	if err != nil {
		return Inbox{}, fmt.Errorf("read the counters: %w", err)
	}
	var d Direction
	var c CounterState
	_, err = pgx.ForEachRow(rows, []any{&d.User, &d.Peer, &c.Seq, &c.Unread}, func() error {
		in.Counters[d] = c
		return nil
	})
	if err != nil {
		return Inbox{}, fmt.Errorf("read the counters: %w", err)
	}
	return in, nil
}

// LostEvent is an event the counter database should reflect and does not.
type LostEvent struct {
	// ID is the event's id; "" when only its state number is known.
	ID   string `json:"id,omitempty"`
	Kind string `json:"kind,omitempty"`
	Direction
	Seq int64 `json:"seq"`
	// Reason says what is missing.
	Reason string `json:"reason"`
}

// String describes the loss in one line.
func (l LostEvent) String() string {
	id := "state"
	if l.ID != "" {
		id = "event " + l.ID
		if l.Kind != "" {
			id += " (" + l.Kind + ")"
		}
	}
	return fmt.Sprintf("%s of user %s reading %s, seq %d: %s", id, l.User, l.Peer, l.Seq, l.Reason)
}

// JudgeAcknowledged returns the events of acked (events counterd
// acknowledged: applied, stale or duplicate) that in does not reflect: not
// in the inbox, or with their direction's counter below their seq. Each
// event of a direction carries the direction's whole state, so a final
// count hides a lost event that a later one overtook; the inbox does not.
// The result is ordered by direction and seq; an event acknowledged twice
// counts once.
func JudgeAcknowledged(acked []counter.Event, in Inbox) []LostEvent {
	seen := map[string]bool{}
	lost := []LostEvent{}
	for _, e := range acked {
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		var why []string
		if _, ok := in.Events[e.ID]; !ok {
			why = append(why, "not in the inbox")
		}
		d := Direction{User: e.UserID, Peer: e.PeerID}
		if c, ok := in.Counters[d]; !ok {
			why = append(why, "its direction has no counter")
		} else if c.Seq < e.Seq {
			why = append(why, fmt.Sprintf("the counter holds seq %d, older than the event", c.Seq))
		}
		if len(why) > 0 {
			lost = append(lost, LostEvent{ID: e.ID, Kind: e.Kind, Direction: d, Seq: e.Seq, Reason: strings.Join(why, "; ")})
		}
	}
	sortLost(lost)
	return lost
}

// JudgeStates returns the states of the dialogs database that in does not
// reflect. recorded is each direction's last state number in the dialogs
// database (dialog_unread.seq), once its outbox drained: every state
// 1..recorded was then acknowledged by counterd, except those of dead
// (dead-lettered events), so each must be in the inbox, and the counter
// must hold the last state that is not dead. The numbers have no gaps
// because each is taken under the direction's row lock.
func JudgeStates(recorded map[Direction]int64, dead map[Direction][]int64, in Inbox) []LostEvent {
	have := map[Direction]map[int64]bool{}
	for _, e := range in.Events {
		if have[e.Direction] == nil {
			have[e.Direction] = map[int64]bool{}
		}
		have[e.Direction][e.Seq] = true
	}
	lost := []LostEvent{}
	for d, last := range recorded {
		top := int64(0) // the last state that must have been applied
		for seq := int64(1); seq <= last; seq++ {
			if slices.Contains(dead[d], seq) {
				continue
			}
			top = seq
			if !have[d][seq] {
				lost = append(lost, LostEvent{Direction: d, Seq: seq, Reason: "not in the inbox"})
			}
		}
		if c := in.Counters[d]; top > 0 && c.Seq < top {
			lost = append(lost, LostEvent{Direction: d, Seq: top,
				Reason: fmt.Sprintf("the counter holds seq %d, older than the last acknowledged state", c.Seq)})
		}
	}
	sortLost(lost)
	return lost
}

func sortLost(lost []LostEvent) {
	slices.SortFunc(lost, func(a, b LostEvent) int {
		if c := strings.Compare(a.User+a.Peer, b.User+b.Peer); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
}
