// Package seed fills the users table for experiments: Run generates
// realistic Russian people from a seed (names with their real frequency
// skew and feminine surnames for women, birthdates, cities weighted by
// population, short biographies), LoadCSV loads the course's people file.
// Both write in COPY batches that are resumable and exactly-once, and
// survive a failover of the primary while loading.
//
// Everyone it creates has the password "socnet-seed" (Password).
//
// It writes users through internal/postgres and its own progress rows in
// seed_runs; it must not serve requests or change other tables.
package seed
