package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of the session workload.
const (
	// DefaultSessions is how many drill users write and read in turn.
	DefaultSessions = 3
	// maxRounds bounds the rounds of one session in one run: a round
	// writes two values, so a dialog stays well under the API's 1000
	// newest messages that a list returns.
	maxRounds = 300
	// roundPause is the pause between two rounds of a session.
	roundPause = 50 * time.Millisecond
)

// Sessions is the drill's history workload through the API. A few drill
// users (the sessions) each repeat a round: send a message to one drill
// recipient and read their dialog back in their own session (which the API
// serves with read-your-writes), create a post, and read a post another
// session created (a read without a session, from a replica); the
// recipient reads the session's dialog too. Every operation, with its
// invoke and completion times and its outcome, goes into a History, which
// CheckHistory judges.
type Sessions struct {
	api   *apiClient
	n     int
	bound time.Duration

	mu        sync.Mutex
	recipient apiUser
	users     []apiUser
}

// NewSessions returns the workload against the API at addr (host:port or
// a base URL) with n sessions (DefaultSessions when < 1). bound is the
// staleness the API promises for reads without a session: its
// --max-replica-lag plus its health interval (docs/ROUTING.md); the
// history check holds reads to it. timeout bounds one request.
func NewSessions(addr string, n int, bound, timeout time.Duration) *Sessions {
	if n < 1 {
		n = DefaultSessions
	}
	return &Sessions{api: newAPIClient(addr, 2*n+2, timeout), n: n, bound: bound}
}

// Bound returns the staleness the history check allows a read.
func (s *Sessions) Bound() time.Duration { return s.bound }

// Setup registers the recipient and the sessions' users and logs them in,
// once; later calls return at once.
func (s *Sessions) Setup(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recipient.token != "" {
		return nil
	}
	r, users, err := s.api.signUpGroup(ctx, "Reader", "Session", s.n)
	if err != nil {
		return fmt.Errorf("sessions: %w", err)
	}
	s.recipient, s.users = r, users
	return nil
}

// sessionRun is one run of the workload.
type sessionRun struct {
	s      *Sessions
	prefix string
	hist   History
	stop   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	seq   int
	posts []postRef // acknowledged posts
}

// postRef is an acknowledged post.
type postRef struct {
	session int
	id, tag string
}

// start begins a run whose values carry prefix; stop it with halt.
func (s *Sessions) start(ctx context.Context, runID string) (*sessionRun, error) {
	if err := s.Setup(ctx); err != nil {
		return nil, err
	}
	r := &sessionRun{s: s, prefix: "drill " + runID + " h#", stop: make(chan struct{})}
	for i := range s.users {
		r.wg.Go(func() { r.loop(ctx, i) })
	}
	return r, nil
}

// halt stops the sessions and waits for the operations in flight.
func (r *sessionRun) halt() {
	if r == nil {
		return
	}
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

func (r *sessionRun) loop(ctx context.Context, i int) {
	for range maxRounds {
		for _, step := range []func(context.Context, int){r.sendMessage, r.readOwnDialog, r.createPost, r.readPost, r.recipientReads} {
			select {
			case <-r.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			step(ctx, i)
		}
		select {
		case <-r.stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(roundPause):
		}
	}
}

// sessionName names session i in the history: S1, S2, ...; the recipient
// is R.
func sessionName(i int) string { return "S" + strconv.Itoa(i+1) }

const recipientName = "R"

func dialogKey(i int) string { return "dialog " + sessionName(i) + "->" + recipientName }

func (r *sessionRun) nextTag() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	return r.prefix + strconv.Itoa(r.seq)
}

// sendMessage sends a message from session i to the recipient.
func (r *sessionRun) sendMessage(ctx context.Context, i int) {
	tag := r.nextTag()
	body, _ := json.Marshal(map[string]string{"text": tag})
	op := Op{Session: sessionName(i), Kind: OpWrite, Key: dialogKey(i), Value: tag, Invoke: time.Now()}
	status, _, err := r.s.api.do(ctx, http.MethodPost, "/dialog/"+r.s.recipient.id+"/send", r.s.users[i].token, body)
	op.Complete = time.Now()
	res := httpResult(status, err)
	op.Outcome, op.Error = res.Outcome, res.Error
	r.hist.Add(op)
}

// readOwnDialog reads session i's dialog with the recipient, as session i.
func (r *sessionRun) readOwnDialog(ctx context.Context, i int) {
	r.readDialog(ctx, i, r.s.users[i], sessionName(i), r.s.recipient.id, false)
}

// recipientReads reads session i's dialog as the recipient.
func (r *sessionRun) recipientReads(ctx context.Context, i int) {
	r.readDialog(ctx, i, r.s.recipient, recipientName, r.s.users[i].id, false)
}

// readDialog reads the dialog of session i as user (named who) with the
// other party with; the read is in the reader's session.
func (r *sessionRun) readDialog(ctx context.Context, i int, user apiUser, who, with string, final bool) {
	op := Op{Session: who, Kind: OpRead, Key: dialogKey(i), InSession: true, Final: final, Invoke: time.Now()}
	status, data, err := r.s.api.do(ctx, http.MethodGet, "/dialog/"+with+"/list", user.token, nil)
	op.Complete = time.Now()
	var msgs []struct {
		Text string `json:"text"`
	}
	if err == nil && status == http.StatusOK && json.Unmarshal(data, &msgs) != nil {
		err = fmt.Errorf("decode the dialog")
	}
	res := httpResult(status, err)
	op.Outcome, op.Error = res.Outcome, res.Error
	if op.Outcome == Acknowledged {
		for _, m := range msgs {
			if strings.HasPrefix(m.Text, r.prefix) {
				op.Seen = append(op.Seen, m.Text)
			}
		}
	}
	r.hist.Add(op)
}

func postKey(tag string) string { return "post " + tag }

// createPost creates a post as session i.
func (r *sessionRun) createPost(ctx context.Context, i int) {
	tag := r.nextTag()
	body, _ := json.Marshal(map[string]string{"text": tag})
	op := Op{Session: sessionName(i), Kind: OpWrite, Key: postKey(tag), Value: tag, Invoke: time.Now()}
	status, data, err := r.s.api.do(ctx, http.MethodPost, "/post/create", r.s.users[i].token, body)
	op.Complete = time.Now()
	res := httpResult(status, err)
	op.Outcome, op.Error = res.Outcome, res.Error
	var id string
	if op.Outcome == Acknowledged && json.Unmarshal(data, &id) == nil && id != "" {
		r.mu.Lock()
		r.posts = append(r.posts, postRef{session: i, id: id, tag: tag})
		r.mu.Unlock()
	}
	r.hist.Add(op)
}

// readPost reads, as session i but outside any session (the API serves
// GET /post/get without one), a post of another session: the newest one
// half of the time, else one drawn at random.
func (r *sessionRun) readPost(ctx context.Context, i int) {
	r.mu.Lock()
	var others []postRef
	for _, p := range r.posts {
		if p.session != i {
			others = append(others, p)
		}
	}
	r.mu.Unlock()
	if len(others) == 0 {
		return
	}
	p := others[len(others)-1]
	if rand.IntN(2) == 0 {
		p = others[rand.IntN(len(others))]
	}
	r.getPost(ctx, sessionName(i), p, false)
}

// getPost reads post p as who; a 404 is a read that saw nothing.
func (r *sessionRun) getPost(ctx context.Context, who string, p postRef, final bool) {
	op := Op{Session: who, Kind: OpRead, Key: postKey(p.tag), Final: final, Invoke: time.Now()}
	status, data, err := r.s.api.do(ctx, http.MethodGet, "/post/get/"+p.id, "", nil)
	op.Complete = time.Now()
	var post struct {
		Text string `json:"text"`
	}
	switch {
	case err == nil && status == http.StatusNotFound:
		op.Outcome = Acknowledged
	case err == nil && status == http.StatusOK && json.Unmarshal(data, &post) == nil:
		op.Outcome, op.Seen = Acknowledged, []string{post.Text}
	default:
		res := httpResult(status, err)
		if res.Outcome == Acknowledged {
			res = WriteResult{Outcome: Unknown, Error: "undecodable"}
		}
		op.Outcome, op.Error = res.Outcome, res.Error
	}
	r.hist.Add(op)
}

// finalReads reads, after the run, every session's dialog as its sender
// and every acknowledged post: each must show every acknowledged write.
func (r *sessionRun) finalReads(ctx context.Context) {
	for i, u := range r.s.users {
		r.readDialog(ctx, i, u, sessionName(i), r.s.recipient.id, true)
	}
	r.mu.Lock()
	posts := append([]postRef(nil), r.posts...)
	r.mu.Unlock()
	for _, p := range posts {
		if ctx.Err() != nil {
			return
		}
		r.getPost(ctx, recipientName, p, true)
	}
}

// check makes the final reads and checks the run's history into run.
func (r *sessionRun) check(ctx context.Context, run *Run) {
	r.finalReads(ctx)
	run.HistoryOps = r.hist.Ops()
	v := CheckHistory(run.HistoryOps, r.s.bound)
	run.History = &v
	run.Problems = append(run.Problems, v.Problems()...)
}

// Record runs the workload alone for d (bounded by its rounds), makes the
// final reads and returns the history: the session workload of a drill
// without the drill, for experiments on the API's consistency.
func (s *Sessions) Record(ctx context.Context, runID string, d time.Duration) ([]Op, error) {
	r, err := s.start(ctx, runID)
	if err != nil {
		return nil, err
	}
	err = sleepCtx(ctx, d)
	r.halt()
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	r.finalReads(ctx)
	return r.hist.Ops(), nil
}
