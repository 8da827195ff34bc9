package load

import (
	"strconv"
	"sync"
	"time"
)

// Outcome is one finished request as the Recorder sees it.
type Outcome struct {
	Op      int           // index into the Recorder's operation names
	At      time.Duration // when it finished, since the start of the run
	Latency time.Duration // from the intended send time (open loop) or the send (closed loop)
	Service time.Duration // from the actual send to the end of the response
	Status  int           // HTTP status, 0 without a response
	Kind    ErrorKind
}

// Recorder collects outcomes from many goroutines: whole-run histograms and
// counters, per operation, and the same per second of the run, bucketed by
// the time each request finished. Goroutines record into shards, each with
// its own lock, so recording does not contend and does not allocate.
type Recorder struct {
	ops     []string
	lastSec int // outcomes after this second count in it; <0: no cap
	shards  []recShard

	mu   sync.Mutex // guards secs
	secs []*secondAgg
}

type recShard struct {
	mu       sync.Mutex
	latency  *Histogram
	service  *Histogram
	ops      []opAgg
	statuses [600]int64 // by status code; index 0: no response
	kinds    [numKinds]int64
	curSec   int
	cur      secondAgg
}

type opAgg struct {
	requests, errors int64
	latency          *Histogram // created on first use
}

type secondAgg struct {
	requests, errors int64
	kinds            [numKinds]int64
	latency          *Histogram
}

func (s *secondAgg) add(o *Outcome) {
	s.requests++
	if o.Kind != KindNone {
		s.errors++
		s.kinds[o.Kind]++
	}
	s.latency.Record(o.Latency)
}

func (s *secondAgg) merge(o *secondAgg) {
	s.requests += o.requests
	s.errors += o.errors
	for k := range s.kinds {
		s.kinds[k] += o.kinds[k]
	}
	s.latency.Merge(o.latency)
}

func (s *secondAgg) reset() {
	s.requests, s.errors, s.kinds = 0, 0, [numKinds]int64{}
	s.latency.Reset()
}

// NewRecorder returns a Recorder for operations named ops, with shards
// independent shards (at least 1). When lastSecond >= 0, outcomes that finish
// after that second are counted in it, so that the requests still in flight
// when a bounded run ends do not make a last, nearly empty second.
func NewRecorder(ops []string, shards, lastSecond int) *Recorder {
	if shards < 1 {
		shards = 1
	}
	r := &Recorder{ops: ops, lastSec: lastSecond, shards: make([]recShard, shards)}
	for i := range r.shards {
		s := &r.shards[i]
		s.latency = NewHistogram()
		s.service = NewHistogram()
		s.ops = make([]opAgg, len(ops))
		s.cur.latency = newCoarseHistogram()
	}
	return r
}

// Shards returns the number of shards; Record takes a shard index below it.
func (r *Recorder) Shards() int { return len(r.shards) }

// Record adds o through shard (taken modulo the number of shards).
func (r *Recorder) Record(shard int, o Outcome) {
	sec := int(o.At / time.Second)
	if o.At < 0 {
		sec = 0
	}
	if r.lastSec >= 0 && sec > r.lastSec {
		sec = r.lastSec
	}
	s := &r.shards[shard%len(r.shards)]
	s.mu.Lock()
	s.latency.Record(o.Latency)
	s.service.Record(o.Service)
	if o.Op >= 0 && o.Op < len(s.ops) {
		a := &s.ops[o.Op]
		a.requests++
		if o.Kind != KindNone {
			a.errors++
		}
		if a.latency == nil {
			a.latency = NewHistogram()
		}
		a.latency.Record(o.Latency)
	}
	if o.Status > 0 && o.Status < len(s.statuses) {
		s.statuses[o.Status]++
	} else {
		s.statuses[0]++
	}
	s.kinds[o.Kind]++
	switch {
	case sec == s.curSec:
		s.cur.add(&o)
	case sec > s.curSec:
		r.flushShard(s, sec)
		s.cur.add(&o)
	default: // a straggler for a second already flushed
		r.mu.Lock()
		r.second(sec).add(&o)
		r.mu.Unlock()
	}
	s.mu.Unlock()
}

// flushShard moves the shard's current second into the series and starts
// second next. The shard's lock must be held.
func (r *Recorder) flushShard(s *recShard, next int) {
	if s.cur.requests > 0 {
		r.mu.Lock()
		r.second(s.curSec).merge(&s.cur)
		r.mu.Unlock()
		s.cur.reset()
	}
	s.curSec = next
}

// second returns the aggregate of second i, growing the series as needed.
// r.mu must be held.
func (r *Recorder) second(i int) *secondAgg {
	for len(r.secs) <= i {
		r.secs = append(r.secs, nil)
	}
	if r.secs[i] == nil {
		r.secs[i] = &secondAgg{latency: newCoarseHistogram()}
	}
	return r.secs[i]
}

// Flush moves every outcome that finished before second sec into the
// per-second series, so that Second(sec-1) is complete but for stragglers.
func (r *Recorder) Flush(sec int) {
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		if s.curSec < sec {
			r.flushShard(s, sec)
		}
		s.mu.Unlock()
	}
}

// Second returns the statistics of second i as far as flushed.
func (r *Recorder) Second(i int) SecondResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.secs) || r.secs[i] == nil {
		return SecondResult{T: i}
	}
	return r.secs[i].result(i)
}

// Seconds flushes everything and returns the series from second 0 to the
// last second with an outcome, gaps included as empty seconds. RPS is the
// count of the second; a caller that knows the last second was partial
// corrects it.
func (r *Recorder) Seconds() []SecondResult {
	r.Flush(int(^uint(0) >> 1))
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]SecondResult, len(r.secs))
	for i, s := range r.secs {
		if s == nil {
			out[i] = SecondResult{T: i}
			continue
		}
		out[i] = s.result(i)
	}
	return out
}

func (s *secondAgg) result(i int) SecondResult {
	res := SecondResult{T: i, Requests: s.requests, Errors: s.errors,
		RPS: float64(s.requests), Latency: s.latency.Summary()}
	for k := KindStatus; k < numKinds; k++ {
		if s.kinds[k] > 0 {
			if res.ErrorKinds == nil {
				res.ErrorKinds = map[string]int64{}
			}
			res.ErrorKinds[k.String()] = s.kinds[k]
		}
	}
	return res
}

// Totals is the whole-run view of a Recorder.
type Totals struct {
	Requests, Successes, Errors int64
	Latency                     Latency // as recorded: from the intended send time in open loop
	Service                     Latency // from the actual send
	StatusCodes                 map[string]int64
	ErrorKinds                  map[string]int64
	Ops                         []OpResult
}

// Totals merges the shards into whole-run statistics. Operations without a
// request are left out of Ops.
func (r *Recorder) Totals() Totals {
	lat, svc := NewHistogram(), NewHistogram()
	opLat := make([]*Histogram, len(r.ops))
	ops := make([]opAgg, len(r.ops))
	var statuses [600]int64
	var kinds [numKinds]int64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		lat.Merge(s.latency)
		svc.Merge(s.service)
		for j := range s.ops {
			ops[j].requests += s.ops[j].requests
			ops[j].errors += s.ops[j].errors
			if s.ops[j].latency != nil {
				if opLat[j] == nil {
					opLat[j] = NewHistogram()
				}
				opLat[j].Merge(s.ops[j].latency)
			}
		}
		for j := range statuses {
			statuses[j] += s.statuses[j]
		}
		for j := range kinds {
			kinds[j] += s.kinds[j]
		}
		s.mu.Unlock()
	}
	t := Totals{Requests: lat.Count(), Latency: lat.Summary(), Service: svc.Summary(),
		StatusCodes: map[string]int64{}, ErrorKinds: map[string]int64{}}
	for k := KindStatus; k < numKinds; k++ {
		t.ErrorKinds[k.String()] = kinds[k]
		t.Errors += kinds[k]
	}
	t.Successes = kinds[KindNone]
	for code, n := range statuses {
		if n == 0 {
			continue
		}
		name := strconv.Itoa(code)
		if code == 0 {
			name = "none"
		}
		t.StatusCodes[name] = n
	}
	for j, name := range r.ops {
		if ops[j].requests == 0 {
			continue
		}
		t.Ops = append(t.Ops, OpResult{Name: name, Requests: ops[j].requests,
			Errors: ops[j].errors, Latency: opLat[j].Summary()})
	}
	return t
}
