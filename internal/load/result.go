package load

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// SchemaVersion names the JSON format of a Result. It changes only when a
// field changes meaning or goes away; new fields may be added.
const SchemaVersion = "socnet-load/1"

// Result is one run of the load generator, and the document `socnet load
// --json` writes. Durations are seconds, latencies milliseconds, rates per
// second. See the package documentation for the fields.
type Result struct {
	Schema      string    `json:"schema"`
	Label       string    `json:"label"`
	Target      string    `json:"target"`
	Mix         []MixPart `json:"mix"`
	Mode        string    `json:"mode"` // "closed" or "open"
	Connections int       `json:"connections"`
	Rate        float64   `json:"rate"` // intended req/s in open loop, 0 in closed loop
	Data        string    `json:"data"` // where the users came from: "api" or "db"
	StartedAt   time.Time `json:"started_at"`
	// Duration is from the first send to the last response.
	Duration    float64 `json:"duration_seconds"`
	Interrupted bool    `json:"interrupted"`

	Requests   int64   `json:"requests"` // finished requests: successes + errors
	Successes  int64   `json:"successes"`
	Errors     int64   `json:"errors"`
	Unsent     int64   `json:"unsent"`  // open loop: sends due that the generator never made
	Aborted    int64   `json:"aborted"` // in flight when the run was stopped; not in Requests
	Throughput float64 `json:"throughput_rps"`
	// Latency is from the intended send time in open loop (so stalls are not
	// hidden), from the send in closed loop.
	Latency Latency `json:"latency_ms"`
	// ServiceTime is from the actual send, without time waiting behind
	// earlier requests; equal to Latency in closed loop.
	ServiceTime Latency          `json:"service_time_ms"`
	StatusCodes map[string]int64 `json:"status_codes"` // every response by status; "none": no response
	ErrorKinds  map[string]int64 `json:"error_kinds"`  // status, timeout, refused, reset, other
	Ops         []OpResult       `json:"ops"`
	Seconds     []SecondResult   `json:"seconds"`
	Generator   GeneratorResult  `json:"generator"`
	Nodes       []NodeResult     `json:"nodes"`
}

// OpResult is the whole-run view of one operation.
type OpResult struct {
	Name     string  `json:"name"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Latency  Latency `json:"latency_ms"`
}

// SecondResult is one second of the run, by the time requests finished.
type SecondResult struct {
	T          int              `json:"t"` // seconds since the start
	Requests   int64            `json:"requests"`
	Errors     int64            `json:"errors"`
	RPS        float64          `json:"rps"` // Requests over the part of the second the run lasted
	Latency    Latency          `json:"latency_ms"`
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// GeneratorCPU is the generator's own CPU use in the second, in percent of one core.
	GeneratorCPU float64 `json:"generator_cpu_percent"`
}

// GeneratorResult is what the load generator itself used.
type GeneratorResult struct {
	GOMAXPROCS int     `json:"gomaxprocs"`
	CPUSeconds float64 `json:"cpu_seconds"` // user + system, from getrusage
	CPUPercent float64 `json:"cpu_percent"` // of one core, over Duration
}

// NodeResult is the load one PostgreSQL node carried during the run.
type NodeResult struct {
	Name    string `json:"name"`
	Cluster string `json:"cluster"`
	Role    string `json:"role"` // at the start of the run
	PID     int    `json:"pid"`  // postmaster; 0 when unknown (no CPU figures)
	// Counters summed over the run from pg_stat_database.
	Xacts       int64   `json:"xacts"`
	TupReturned int64   `json:"tup_returned"`
	TupFetched  int64   `json:"tup_fetched"`
	TupInserted int64   `json:"tup_inserted"`
	TupUpdated  int64   `json:"tup_updated"`
	TupDeleted  int64   `json:"tup_deleted"`
	TPS         float64 `json:"tps"`       // mean transactions per second
	TPSShare    float64 `json:"tps_share"` // of the transactions of the node's cluster, 0..1
	// CPUSeconds and CPUPercent (mean, of one core) cover the postmaster and
	// its children; absent when the pid is unknown.
	CPUSeconds    *float64     `json:"cpu_seconds,omitempty"`
	CPUPercent    *float64     `json:"cpu_percent,omitempty"`
	MaxLagBytes   int64        `json:"max_lag_bytes"`
	MaxLagSeconds float64      `json:"max_lag_seconds"`
	DownSamples   int          `json:"down_samples"` // samples that found the node unreachable
	Samples       []NodeSample `json:"samples"`
}

// NodeSample is one sampling interval of a node.
type NodeSample struct {
	T    float64 `json:"t"` // seconds since the start, at the end of the interval
	Up   bool    `json:"up"`
	Role string  `json:"role"` // primary, replica or down
	// Rates over the interval.
	TPS         float64  `json:"tps"`
	TupReturned float64  `json:"tup_returned_ps"`
	TupFetched  float64  `json:"tup_fetched_ps"`
	TupInserted float64  `json:"tup_inserted_ps"`
	CPUPercent  *float64 `json:"cpu_percent,omitempty"`
	// LagBytes and LagSeconds: on a replica, WAL received but not replayed
	// and the age of the last replayed transaction while behind; on a
	// primary, the largest replay lag among its standbys.
	LagBytes   int64   `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
}

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// ReadJSON reads a Result written by WriteJSON and checks its schema.
func ReadJSON(rd io.Reader) (*Result, error) {
	var r Result
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("read result: %w", err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("read result: schema %q, want %q", r.Schema, SchemaVersion)
	}
	return &r, nil
}

// ReadJSONFile reads a Result from a file.
func ReadJSONFile(path string) (*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read result: %w", err)
	}
	defer f.Close()
	r, err := ReadJSON(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}
