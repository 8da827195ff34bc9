// Package feed keeps every user's timeline, the ids of the newest
// social.FeedCap posts of the people they follow, in Redis, so that a feed
// page costs a few Redis and primary-key reads instead of a scan of every
// followed author's posts.
//
// Redis is a cache, never the truth. Post and friendship changes write an
// event into the feed_outbox table in the same transaction
// (EnqueuePostCreated and friends); a Worker applies the events to Redis at
// least once. Applying reads the current state from PostgreSQL, so a
// duplicate or a late event cannot corrupt a timeline. A Reader serves
// pages from Redis, rebuilds a missing timeline from PostgreSQL, and serves
// straight from PostgreSQL while Redis is unreachable. Authors with many
// followers (celebrities) are not fanned out: their newest posts live in a
// list of their own that is merged into their followers' pages at read.
// Check compares cached timelines with the SQL truth. docs/FEED.md tells
// the whole design.
//
// The package must not import internal/postgres (which calls it) and never
// treats Redis content as authoritative.
package feed
