package drill

import (
	"fmt"
	"slices"
	"strings"
)

// maxExamples bounds the tags a report quotes for one kind of problem.
const maxExamples = 5

// Row is one row of a run found on a node: the tag the write stored and the
// row's identifier.
type Row struct {
	Tag string `json:"tag"`
	ID  string `json:"id"`
}

// NodeRows is what verification read from one node: every row tagged by the
// run, or why the node could not be read.
type NodeRows struct {
	Node string
	Role string
	Rows []Row
	// Err, when not empty, says why the node could not be read; Rows is
	// meaningless then and the node counts as unverified.
	Err string
}

// NodeVerdict is the verdict on one node.
type NodeVerdict struct {
	Node string `json:"node"`
	Role string `json:"role"`
	// Rows counts the rows of the run on the node.
	Rows int `json:"rows"`
	// Lost counts acknowledged writes absent from the node; must be 0.
	Lost int `json:"lost"`
	// LostTags quotes a few of them.
	LostTags []string `json:"lost_tags,omitempty"`
	// PresentUnacknowledged counts writes in doubt (Unknown) that are on the
	// node: allowed, and reported.
	PresentUnacknowledged int `json:"present_unacknowledged"`
	// FailedPresent counts writes the client saw definitely refused that are
	// on the node nevertheless; must be 0.
	FailedPresent int `json:"failed_present"`
	// Duplicates counts logical writes stored more than once; must be 0.
	Duplicates    int      `json:"duplicates"`
	DuplicateTags []string `json:"duplicate_tags,omitempty"`
	// WrongID counts acknowledged writes whose row has another id than the
	// acknowledgement named; must be 0.
	WrongID int `json:"wrong_id"`
	// Unexpected counts rows carrying the run's prefix under a tag no
	// attempt used; must be 0.
	Unexpected int `json:"unexpected"`
	// Missing and Extra compare the node's writes with the reference node's
	// (the primary): writes the reference has and this node lacks, and the
	// reverse. Both must be 0 once replicas have replayed.
	Missing int `json:"missing_vs_reference"`
	Extra   int `json:"extra_vs_reference"`
	// Err says why the node could not be read.
	Err string `json:"error,omitempty"`
}

// Verdict judges a run from its ledger and what every node holds.
type Verdict struct {
	Attempts     int `json:"attempts"`
	Acknowledged int `json:"acknowledged"`
	Failed       int `json:"failed"`
	Unknown      int `json:"unknown"`
	// Lost counts acknowledged writes absent from at least one node.
	Lost int `json:"lost"`
	// LostEverywhere counts acknowledged writes absent from every node
	// that was read. It is below Lost when a node lacks writes another
	// has: a replica that could not replay them because the cluster had no
	// primary to replay from, or a node that truly lost them.
	LostEverywhere int `json:"lost_everywhere"`
	// PresentUnacknowledged counts writes in doubt found on the reference
	// node: they were applied although the client never heard so.
	PresentUnacknowledged int `json:"present_unacknowledged"`
	// Duplicates counts logical writes stored more than once on some node.
	Duplicates int `json:"duplicates"`
	// Reference is the node the others are compared with: the primary.
	Reference string        `json:"reference"`
	Nodes     []NodeVerdict `json:"nodes"`
	// Problems lists, one sentence each, everything that makes the verdict
	// a failure; empty when the run passed.
	Problems []string `json:"problems"`
}

// OK reports whether the run passed: nothing acknowledged lost, nothing
// duplicated, every node read and in agreement.
func (v Verdict) OK() bool { return len(v.Problems) == 0 }

// Judge compares the ledger's attempts with the rows read from every node.
// A write is lost when it was acknowledged and a node lacks it; a write in
// doubt may be present or absent, but must then be so on every node.
func Judge(attempts []Attempt, nodes []NodeRows) Verdict {
	v := Verdict{Attempts: len(attempts), Problems: []string{}}
	byTag := make(map[string]*Attempt, len(attempts))
	for i := range attempts {
		a := &attempts[i]
		byTag[a.Tag] = a
		switch a.Outcome {
		case Acknowledged:
			v.Acknowledged++
		case Failed:
			v.Failed++
		default:
			v.Unknown++
		}
	}
	if len(nodes) == 0 {
		v.Problems = append(v.Problems, "no node was verified")
		return v
	}

	ref := -1
	for i, n := range nodes {
		if n.Err == "" && (ref < 0 || (n.Role == RolePrimary && nodes[ref].Role != RolePrimary)) {
			ref = i
		}
	}
	var refTags map[string]int
	if ref >= 0 {
		v.Reference = nodes[ref].Node
		refTags = countTags(nodes[ref].Rows)
	}

	lost := map[string]bool{}
	seen := map[string]bool{} // tags found on some node
	verified := 0
	dups := map[string]bool{}
	for _, n := range nodes {
		nv := NodeVerdict{Node: n.Node, Role: n.Role, Err: n.Err}
		if n.Err != "" {
			v.Problems = append(v.Problems, fmt.Sprintf("%s could not be verified: %s", n.Node, n.Err))
			v.Nodes = append(v.Nodes, nv)
			continue
		}
		nv.Rows = len(n.Rows)
		verified++
		tags := countTags(n.Rows)
		for tag := range tags {
			seen[tag] = true
		}
		ids := map[string][]string{}
		for _, r := range n.Rows {
			ids[r.Tag] = append(ids[r.Tag], r.ID)
		}
		for _, a := range attempts {
			c := tags[a.Tag]
			switch {
			case a.Outcome == Acknowledged && c == 0:
				nv.Lost++
				lost[a.Tag] = true
				if len(nv.LostTags) < maxExamples {
					nv.LostTags = append(nv.LostTags, a.Tag)
				}
			case a.Outcome == Acknowledged && a.ID != "" && !slices.Contains(ids[a.Tag], a.ID):
				nv.WrongID++
			case a.Outcome == Failed && c > 0:
				nv.FailedPresent++
			case a.Outcome == Unknown && c > 0:
				nv.PresentUnacknowledged++
			}
		}
		for _, tag := range sortedKeys(tags) {
			c := tags[tag]
			if byTag[tag] == nil {
				nv.Unexpected++
			}
			if c > 1 {
				nv.Duplicates++
				dups[tag] = true
				if len(nv.DuplicateTags) < maxExamples {
					nv.DuplicateTags = append(nv.DuplicateTags, tag)
				}
			}
			if refTags != nil && refTags[tag] == 0 {
				nv.Extra++
			}
		}
		for tag := range refTags {
			if tags[tag] == 0 {
				nv.Missing++
			}
		}
		v.Nodes = append(v.Nodes, nv)
		v.Problems = append(v.Problems, nodeProblems(nv, v.Reference)...)
	}
	v.Lost = len(lost)
	if verified > 0 {
		for tag := range lost {
			if !seen[tag] {
				v.LostEverywhere++
			}
		}
	}
	v.Duplicates = len(dups)
	if ref >= 0 {
		for _, nv := range v.Nodes {
			if nv.Node == v.Reference {
				v.PresentUnacknowledged = nv.PresentUnacknowledged
			}
		}
	}
	return v
}

// nodeProblems says, one sentence each, what is wrong with a node.
func nodeProblems(nv NodeVerdict, reference string) []string {
	var p []string
	if nv.Lost > 0 {
		p = append(p, fmt.Sprintf("%s lacks %d acknowledged write(s), e.g. %s", nv.Node, nv.Lost, strings.Join(nv.LostTags, ", ")))
	}
	if nv.Duplicates > 0 {
		p = append(p, fmt.Sprintf("%s holds %d write(s) more than once, e.g. %s", nv.Node, nv.Duplicates, strings.Join(nv.DuplicateTags, ", ")))
	}
	if nv.WrongID > 0 {
		p = append(p, fmt.Sprintf("%s holds %d acknowledged write(s) under another id than the acknowledgement named", nv.Node, nv.WrongID))
	}
	if nv.FailedPresent > 0 {
		p = append(p, fmt.Sprintf("%s holds %d write(s) that were refused with a definite error", nv.Node, nv.FailedPresent))
	}
	if nv.Unexpected > 0 {
		p = append(p, fmt.Sprintf("%s holds %d row(s) tagged by the run that no attempt made", nv.Node, nv.Unexpected))
	}
	if nv.Missing > 0 || nv.Extra > 0 {
		p = append(p, fmt.Sprintf("%s disagrees with %s: %d write(s) missing, %d extra", nv.Node, reference, nv.Missing, nv.Extra))
	}
	return p
}

func countTags(rows []Row) map[string]int {
	m := make(map[string]int, len(rows))
	for _, r := range rows {
		m[r.Tag]++
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
