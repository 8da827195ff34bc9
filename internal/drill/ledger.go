package drill

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Outcome is what a client knows about one write attempt.
type Outcome uint8

// The outcomes of a write attempt.
const (
	// Acknowledged: the client got a success (HTTP 2xx, or COMMIT returned).
	// The write must survive every failure the drill causes.
	Acknowledged Outcome = iota + 1
	// Failed: a definite refusal that means nothing was written (HTTP 4xx,
	// or a constraint the statement violated).
	Failed
	// Unknown: a timeout, a broken connection or a server error (5xx,
	// including 503): the write may or may not have been applied, and may
	// or may not survive a failover.
	Unknown
)

var outcomeNames = map[Outcome]string{Acknowledged: "acknowledged", Failed: "failed", Unknown: "unknown"}

// String returns the outcome's name as it appears in reports.
func (o Outcome) String() string {
	if s, ok := outcomeNames[o]; ok {
		return s
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText writes the outcome's name.
func (o Outcome) MarshalText() ([]byte, error) {
	if _, ok := outcomeNames[o]; !ok {
		return nil, fmt.Errorf("marshal outcome: unknown value %d", o)
	}
	return []byte(o.String()), nil
}

// UnmarshalText reads an outcome's name.
func (o *Outcome) UnmarshalText(b []byte) error {
	for k, v := range outcomeNames {
		if v == string(b) {
			*o = k
			return nil
		}
	}
	return fmt.Errorf("unmarshal outcome: unknown name %q", b)
}

// ClassifyHTTP returns the outcome of an HTTP request that got status (0
// when no response arrived) or failed with err. A 4xx says the request was
// refused before anything was written; a 5xx (503 included) or a transport
// error leaves the write in doubt; anything but 2xx, 4xx and 5xx is in doubt
// too, since a client cannot tell what it means.
func ClassifyHTTP(status int, err error) Outcome {
	switch {
	case err != nil || status == 0:
		return Unknown
	case status >= 200 && status < 300:
		return Acknowledged
	case status >= 400 && status < 500:
		return Failed
	default:
		return Unknown
	}
}

// WriteResult is what a Writer saw of one write.
type WriteResult struct {
	// Outcome classifies what the client saw.
	Outcome Outcome
	// ID is the identifier an acknowledgement named (the new user's id, the
	// inserted row's id); "" when none.
	ID string
	// Error is a short class of a failure for the report: an HTTP status
	// ("503"), "timeout", "refused", "reset", a SQLSTATE; "" on success.
	Error string
	// Server is the address:port of the server that acknowledged, when the
	// writer can tell (SQLWriter); "" otherwise.
	Server string
}

// Attempt is one logical write in the ledger.
type Attempt struct {
	Seq     int64   `json:"seq"`
	Tag     string  `json:"tag"`
	Outcome Outcome `json:"outcome"`
	ID      string  `json:"id,omitempty"`
	Error   string  `json:"error,omitempty"`
	// Rows is how many rows the attempt wrote when it is a batch; 0 means
	// one write.
	Rows int `json:"rows,omitempty"`
	// Server is the address:port of the server that acknowledged, when the
	// writer tells it.
	Server string    `json:"server,omitempty"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// Ledger is the client-side record of every write attempt of one drill run.
// Each attempt carries a tag unique to the run ("drill RUNID #SEQ") that the
// write stores with the data, so that verification can find exactly the
// rows of this run on every node. An attempt is never retried under the same
// tag: a tag found twice is a duplicate made by the system, not the client.
// A Ledger is safe for concurrent use.
type Ledger struct {
	runID string
	mu    sync.Mutex
	next  int64
	recs  []Attempt
	// latestAck is the latest start of an acknowledged attempt.
	latestAck time.Time
}

// NewLedger returns an empty ledger for the run.
func NewLedger(runID string) *Ledger { return &Ledger{runID: runID} }

// NewRunID returns a run identifier unique enough to tag a run's rows: the
// UTC time and 6 random hex characters, e.g. "20250102T150405-a1b2c3".
func NewRunID(now time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b) // never fails on Linux
	return now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

// RunID returns the run the ledger records.
func (l *Ledger) RunID() string { return l.runID }

// Prefix returns the common start of every tag of the run.
func (l *Ledger) Prefix() string { return TagPrefix(l.runID) }

// TagPrefix returns the common start of every tag of run runID.
func TagPrefix(runID string) string { return "drill " + runID + " #" }

// Next reserves the next sequence number and returns it with its tag.
func (l *Ledger) Next() (seq int64, tag string) {
	l.mu.Lock()
	l.next++
	seq = l.next
	l.mu.Unlock()
	return seq, l.Prefix() + strconv.FormatInt(seq, 10)
}

// Record adds a finished attempt.
func (l *Ledger) Record(a Attempt) {
	l.mu.Lock()
	l.recs = append(l.recs, a)
	if a.Outcome == Acknowledged && a.Start.After(l.latestAck) {
		l.latestAck = a.Start
	}
	l.mu.Unlock()
}

// LatestAckStart returns the latest start of an acknowledged attempt: an
// acknowledged write started at or after t exists when it is not before t.
func (l *Ledger) LatestAckStart() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.latestAck
}

// Attempts returns a copy of the attempts in sequence order.
func (l *Ledger) Attempts() []Attempt {
	l.mu.Lock()
	out := slices.Clone(l.recs)
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Attempt) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}
