// Package load is the HTTP load generator of socnet: it drives the socnet API
// with a workload, measures latency in HDR histograms, samples the load each
// PostgreSQL node carries meanwhile, and reports the run as text, JSON, a
// self-contained HTML page and PNG charts, alone or beside another run.
//
// It must not change the system under load beyond the requests it sends
// (and the users, posts and follows Prepare creates), and it sends them only
// to a loopback target unless told otherwise.
//
// # Workloads
//
// A workload is a weighted mix of scenarios (ParseMix): get (GET
// /user/get/{id} of existing users), search (GET /user/search with 2 to 4
// letter prefixes of real first and second names), register (POST
// /user/register), post (POST /post/create and GET /post/feed, half each),
// dialog (POST /dialog/{id}/send and GET /dialog/{id}/list, half each) and
// healthz. Users, names and sessions come from Prepare: sampled from the
// users table of a node (PrepareConfig.DSN: TABLESAMPLE SYSTEM (1), or a
// random choice when the table is small) and logged in with the seed
// password, or registered through the API when no DSN is given.
//
// # Loops
//
// In closed loop, Config.Connections workers each send a request as soon as
// the previous one is answered; latency is the time of each request. In
// open loop (Config.Rate), requests are due at start + i/rate and latency
// counts from that due time, so a stall of the server shows in the latency
// of every request it delayed rather than being hidden by a generator that
// waits (coordinated omission). Requests due before the end that were never
// sent are reported as unsent.
//
// # Result JSON (schema "socnet-load/1")
//
// `socnet load --json` writes a Result. Durations are seconds, latencies
// milliseconds with fields p50, p90, p99, p99_9, max and mean, rates per
// second. Top level: schema, label, target, mix [{scenario, weight}], mode
// ("closed" or "open"), connections, rate, data ("api" or "db"), started_at
// (RFC 3339), duration_seconds, interrupted, requests (= successes +
// errors), successes, errors, unsent, aborted, throughput_rps, latency_ms,
// service_time_ms, status_codes {"200": n, ..., "none": n without a
// response}, error_kinds {status, timeout, refused, reset, other}, ops
// [{name, requests, errors, latency_ms}], seconds, generator and nodes.
//
// seconds holds one entry per second of the run by the time requests
// finished: {t, requests, errors, rps, latency_ms, error_kinds,
// generator_cpu_percent}. generator is {gomaxprocs, cpu_seconds,
// cpu_percent} from getrusage. nodes holds one entry per sampled PostgreSQL
// node: {name, cluster, role, pid, xacts, tup_returned, tup_fetched,
// tup_inserted, tup_updated, tup_deleted (counted over the run from
// pg_stat_database; xacts leaves out the sampler's own), tps, tps_share (of its cluster's transactions),
// cpu_seconds and cpu_percent (postmaster and children from /proc; absent
// without a pid), max_lag_bytes, max_lag_seconds, down_samples, samples}.
// Each sample is {t, up, role, tps, tup_returned_ps, tup_fetched_ps,
// tup_inserted_ps, cpu_percent, lag_bytes, lag_seconds}; lag on a replica is
// WAL received but not replayed and the age of the last replayed
// transaction while behind, on a primary the largest replay lag among its
// standbys.
//
// PostgreSQL publishes a backend's counters at most about once a second,
// so the per-second rates of a node trail the load by up to a second; the
// totals over the run are exact but for the last second.
//
// New fields may appear in later versions; a field changes meaning or goes
// away only with a new schema name.
package load
