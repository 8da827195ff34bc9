package load

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Op is one kind of request of the socnet API.
type Op int

// The requests the generator sends.
const (
	OpHealthz      Op = iota // GET /healthz
	OpUserGet                // GET /user/get/{id}
	OpUserSearch             // GET /user/search?first_name=&last_name=
	OpUserRegister           // POST /user/register
	OpPostCreate             // POST /post/create (bearer)
	OpPostFeed               // GET /post/feed (bearer)
	OpDialogSend             // POST /dialog/{id}/send (bearer)
	OpDialogList             // GET /dialog/{id}/list (bearer)
	OpDialogUnread           // GET /dialog/unread (bearer)
	numOps
)

var opNames = [numOps]string{"healthz", "user_get", "user_search", "user_register",
	"post_create", "post_feed", "dialog_send", "dialog_list", "dialog_unread"}

// String returns the operation's name as it appears in reports.
func (o Op) String() string {
	if o >= 0 && o < numOps {
		return opNames[o]
	}
	return "op" + strconv.Itoa(int(o))
}

// OpNames returns the names of all operations, indexed by Op.
func OpNames() []string { return append([]string(nil), opNames[:]...) }

// needsUsers reports whether o needs ids or names of existing users.
func (o Op) needsUsers() bool { return o == OpUserGet || o == OpUserSearch }

// needsSessions reports whether o needs logged-in users.
func (o Op) needsSessions() bool { return o >= OpPostCreate && o <= OpDialogUnread }

// scenarios maps each scenario to its operations, in equal shares.
var scenarios = map[string][]Op{
	"healthz":  {OpHealthz},
	"get":      {OpUserGet},
	"search":   {OpUserSearch},
	"register": {OpUserRegister},
	"post":     {OpPostCreate, OpPostFeed},
	"feed":     {OpPostFeed}, // reads only: the feed of seeded users (socnet seed --friends --posts)
	"dialog":   {OpDialogSend, OpDialogList},
	"unread":   {OpDialogUnread},
}

// Scenarios returns the names of the scenarios a mix may weigh, sorted.
func Scenarios() []string {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// MixPart is one scenario of a workload and its weight.
type MixPart struct {
	Scenario string `json:"scenario"`
	Weight   int    `json:"weight"`
}

// ParseMix parses a weighted mix such as "get=70,search=20,register=5,post=5".
// A scenario named alone ("get") weighs 1.
func ParseMix(s string) ([]MixPart, error) {
	var mix []MixPart
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, w, hasWeight := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		weight := 1
		if hasWeight {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 0 || n > 1_000_000 {
				return nil, fmt.Errorf("mix %q: weight of %s must be an integer from 0 to 1000000", s, name)
			}
			weight = n
		}
		if _, ok := scenarios[name]; !ok {
			return nil, fmt.Errorf("mix %q: unknown scenario %q (one of %s)", s, name, strings.Join(Scenarios(), ", "))
		}
		if seen[name] {
			return nil, fmt.Errorf("mix %q: scenario %s given twice", s, name)
		}
		seen[name] = true
		if weight > 0 {
			mix = append(mix, MixPart{Scenario: name, Weight: weight})
		}
	}
	if len(mix) == 0 {
		return nil, fmt.Errorf("mix %q: no scenario with a positive weight", s)
	}
	return mix, nil
}

// opTable picks operations by weight with one random draw.
type opTable struct {
	ops   []Op
	cum   []uint64 // cumulative weights
	total uint64
}

// newOpTable spreads each scenario's weight over its operations.
func newOpTable(mix []MixPart) (opTable, error) {
	var t opTable
	if len(mix) == 0 {
		return t, fmt.Errorf("empty workload")
	}
	for _, p := range mix {
		ops, ok := scenarios[p.Scenario]
		if !ok {
			return t, fmt.Errorf("unknown scenario %q", p.Scenario)
		}
		if p.Weight <= 0 {
			continue
		}
		// Weights are scaled so that a scenario's share splits evenly.
		share := uint64(p.Weight) * 1000 / uint64(len(ops))
		for _, o := range ops {
			t.total += share
			t.ops = append(t.ops, o)
			t.cum = append(t.cum, t.total)
		}
	}
	if t.total == 0 {
		return t, fmt.Errorf("workload has no positive weight")
	}
	return t, nil
}

// pick returns the operation for a uniform draw r in [0, t.total).
func (t *opTable) pick(r uint64) Op {
	for i, c := range t.cum {
		if r < c {
			return t.ops[i]
		}
	}
	return t.ops[len(t.ops)-1]
}

// needs reports what data the operations of t need.
func (t *opTable) needs() (users, sessions bool) {
	for _, o := range t.ops {
		users = users || o.needsUsers()
		sessions = sessions || o.needsSessions()
	}
	return users, sessions
}

// NeedsData reports whether a workload needs existing users (ids and names)
// and logged-in sessions, so that Prepare fetches only what is used.
func NeedsData(mix []MixPart) (users, sessions bool, err error) {
	t, err := newOpTable(mix)
	if err != nil {
		return false, false, err
	}
	users, sessions = t.needs()
	return users, sessions, nil
}
