package counter

// The relay's polling and backlog queries, for EXPLAIN in benchmarks.
const (
	FetchDueSQL = fetchDueSQL
	BacklogSQL  = backlogSQL
)

// MigrationFiles are the embedded migrations of the counter database.
var MigrationFiles = migrationFiles
