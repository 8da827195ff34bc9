package counter

// The relay's polling and backlog queries, for EXPLAIN in benchmarks.
const (
	FetchDueSQL = fetchDueSQL
	BacklogSQL  = backlogSQL
)

// MigrationFiles are the embedded migrations of the counter database.
var MigrationFiles = migrationFiles

// SetLockedReadsHook makes the reconciler's locked comparison call f between
// its reads of the outbox and of the counter; nil removes it.
func SetLockedReadsHook(f func()) { lockedReadsHook = f }
