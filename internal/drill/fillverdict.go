package drill

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Batch is one acknowledged batch of a bulk load: rows [First, First+N)
// with their ids, committed at At.
type Batch struct {
	First int       `json:"first"`
	N     int       `json:"n"`
	IDs   []string  `json:"-"`
	At    time.Time `json:"at"`
}

// BatchLedger records the batches a bulk load acknowledged (the loader's
// OnBatch hook). It is safe for concurrent use.
type BatchLedger struct {
	mu      sync.Mutex
	batches []Batch
}

// OnBatch records a committed batch; its signature is seed.Options.OnBatch.
func (l *BatchLedger) OnBatch(first, n int, ids []string) {
	l.mu.Lock()
	l.batches = append(l.batches, Batch{First: first, N: n, IDs: ids, At: time.Now()})
	l.mu.Unlock()
}

// Batches returns the recorded batches in the order they were acknowledged.
func (l *BatchLedger) Batches() []Batch {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.batches)
}

// Attempts turns the batches into acknowledged attempts for the timeline,
// one per batch weighing its rows, ending when the batch was acknowledged.
func (l *BatchLedger) Attempts() []Attempt {
	var out []Attempt
	for i, b := range l.Batches() {
		out = append(out, Attempt{Seq: int64(i + 1), Outcome: Acknowledged, Rows: b.N, Start: b.At, End: b.At})
	}
	return out
}

// FillNode is what verification counted on one node after a bulk load.
type FillNode struct {
	Node string `json:"node"`
	Role string `json:"role"`
	// AckedPresent counts the acknowledged ids found on the node.
	AckedPresent int64 `json:"acked_present"`
	// Rows is count(*) of the table, Distinct count(DISTINCT id).
	Rows     int64 `json:"rows"`
	Distinct int64 `json:"distinct"`
	// Err says why the node could not be read.
	Err string `json:"error,omitempty"`
}

// FillVerdict judges a bulk load interrupted by a failure.
type FillVerdict struct {
	// Target is the number of rows the load was asked for.
	Target int `json:"target"`
	// Batches and AckedRows count what the loader acknowledged.
	Batches   int `json:"batches"`
	AckedRows int `json:"acked_rows"`
	// Expected is the row count every node must hold: the count before the
	// load plus Target when the load finished.
	Expected int64 `json:"expected_rows"`
	// Lost is the largest number of acknowledged rows one node lacks.
	Lost     int64      `json:"lost"`
	Nodes    []FillNode `json:"nodes"`
	Problems []string   `json:"problems"`
}

// OK reports whether the load passed.
func (v FillVerdict) OK() bool { return len(v.Problems) == 0 }

// JudgeFill checks a bulk load: every acknowledged row is on every node;
// no batch was acknowledged twice and batches cover distinct rows; each
// node holds exactly expected rows, each once; all nodes agree. finished
// says whether the load reported success (a load that gave up is a
// problem of its own, but its acknowledged rows are still checked).
func JudgeFill(target int, batches []Batch, expected int64, finished bool, nodes []FillNode) FillVerdict {
	v := FillVerdict{Target: target, Batches: len(batches), Expected: expected, Problems: []string{}}
	seen := map[int]bool{}
	covered := 0
	for _, b := range batches {
		v.AckedRows += b.N
		if seen[b.First] {
			v.Problems = append(v.Problems, fmt.Sprintf("the batch at row %d was acknowledged twice", b.First))
		}
		seen[b.First] = true
		covered = max(covered, b.First+b.N)
	}
	if !finished {
		v.Problems = append(v.Problems, fmt.Sprintf("the load did not finish: %d of %d rows acknowledged", v.AckedRows, target))
	} else if v.AckedRows != target || covered != target {
		v.Problems = append(v.Problems, fmt.Sprintf("the load finished with %d rows acknowledged in batches, not %d", v.AckedRows, target))
	}
	if len(nodes) == 0 {
		v.Problems = append(v.Problems, "no node was verified")
	}
	var ref *FillNode
	for i := range nodes {
		n := &nodes[i]
		v.Nodes = append(v.Nodes, *n)
		if n.Err != "" {
			v.Problems = append(v.Problems, fmt.Sprintf("%s could not be verified: %s", n.Node, n.Err))
			continue
		}
		if lost := int64(v.AckedRows) - n.AckedPresent; lost > 0 {
			v.Lost = max(v.Lost, lost)
			v.Problems = append(v.Problems, fmt.Sprintf("%s lacks %d acknowledged row(s)", n.Node, lost))
		}
		if n.Rows != n.Distinct {
			v.Problems = append(v.Problems, fmt.Sprintf("%s holds %d rows but %d distinct ids", n.Node, n.Rows, n.Distinct))
		}
		if finished && n.Rows != expected {
			v.Problems = append(v.Problems, fmt.Sprintf("%s holds %d rows, expected %d", n.Node, n.Rows, expected))
		}
		if ref == nil {
			ref = n
		} else if n.Rows != ref.Rows || n.AckedPresent != ref.AckedPresent {
			v.Problems = append(v.Problems, fmt.Sprintf("%s disagrees with %s: %d rows (%d acknowledged) against %d (%d)",
				n.Node, ref.Node, n.Rows, n.AckedPresent, ref.Rows, ref.AckedPresent))
		}
	}
	return v
}
