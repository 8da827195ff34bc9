package seed

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
)

// Defaults of GraphOptions: with 1,000,000 people following 20 authors
// each, the most followed author gets about 33,000 followers and about 200
// authors more than 10,000; the median author a handful.
const (
	DefaultSkew      = 1.1
	DefaultSkewShift = 100
	// DefaultGraphBatch is the number of people per transaction.
	DefaultGraphBatch = 1000
	// postSpan is how far back the seeded posts go.
	postSpan = 30 * 24 * time.Hour
)

// GraphOptions tune Graph.
type GraphOptions struct {
	// Users and Seed name the people of a Run: those at indexes
	// [0, Users) of Seed. They must be loaded.
	Users int
	Seed  int64
	// Friends is how many authors each person follows, drawn from a
	// power law over the people (Zipf: P(rank k) ∝ (SkewShift+k)^-Skew),
	// so that a few authors have very many followers.
	Friends int
	// Posts is how many posts each person writes, spread over the last 30
	// days.
	Posts int
	// Skew (> 1) and SkewShift (≥ 1) shape the law; 0 means the defaults.
	Skew      float64
	SkewShift float64
	// BatchSize is the number of people per transaction; 0 means
	// DefaultGraphBatch.
	BatchSize int
	// Now is the newest post time; zero means time.Now().
	Now time.Time
}

// GraphResult says what Graph wrote.
type GraphResult struct {
	// Friends and Posts count the rows inserted (rows already there, from
	// an earlier run, are not counted).
	Friends, Posts int64
	Elapsed        time.Duration
}

// Graph makes the people of a Run follow each other and write posts,
// straight into PostgreSQL (no feed events: timelines are rebuilt from the
// tables on their first read). Who follows whom and the post ids depend
// only on (Seed, person, Friends, Posts, Skew, SkewShift), and rows already
// there are skipped, so a run stopped halfway is finished by running it
// again.
func Graph(ctx context.Context, db *dbroute.DB, opts GraphOptions, progress io.Writer) (GraphResult, error) {
	start := time.Now()
	var res GraphResult
	switch {
	case opts.Users < 2:
		return res, fmt.Errorf("seed graph: need at least 2 people, got %d", opts.Users)
	case opts.Friends < 0 || opts.Posts < 0:
		return res, fmt.Errorf("seed graph: friends and posts must not be negative")
	case opts.Friends >= opts.Users:
		return res, fmt.Errorf("seed graph: %d friends each among %d people", opts.Friends, opts.Users)
	}
	if opts.Skew == 0 {
		opts.Skew = DefaultSkew
	}
	if opts.SkewShift == 0 {
		opts.SkewShift = DefaultSkewShift
	}
	if opts.Skew <= 1 || opts.SkewShift < 1 {
		return res, fmt.Errorf("seed graph: want skew > 1 and shift ≥ 1, got %g and %g", opts.Skew, opts.SkewShift)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultGraphBatch
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	for first := 0; first < opts.Users; first += opts.BatchSize {
		n := min(opts.BatchSize, opts.Users-first)
		f, p, err := graphBatch(ctx, db, opts, first, n)
		if err != nil {
			return res, fmt.Errorf("seed graph: people %d..%d: %w", first, first+n-1, err)
		}
		res.Friends += f
		res.Posts += p
		if progress != nil && (first/opts.BatchSize)%100 == 99 {
			fmt.Fprintf(progress, "graph: %d of %d people, %d follows and %d posts written\n", first+n, opts.Users, res.Friends, res.Posts)
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// graphBatch writes the follows and posts of people [first, first+n).
func graphBatch(ctx context.Context, db *dbroute.DB, opts GraphOptions, first, n int) (friends, posts int64, err error) {
	var users, authors, postIDs, postAuthors []uuid.UUID
	var texts []string
	var times []time.Time
	for i := first; i < first+n; i++ {
		r := rand.New(rand.NewPCG(uint64(opts.Seed), mix64(uint64(i)+0x5eed)))
		me := userID(opts.Seed, i)
		z := rand.NewZipf(r, opts.Skew, opts.SkewShift, uint64(opts.Users-1))
		seen := map[int]bool{i: true}
		for tries := 0; len(seen) <= opts.Friends && tries < 20*opts.Friends; tries++ {
			a := int(z.Uint64())
			if seen[a] {
				continue
			}
			seen[a] = true
			users, authors = append(users, me), append(authors, userID(opts.Seed, a))
		}
		for j := range opts.Posts {
			postIDs = append(postIDs, postID(opts.Seed, i, j))
			postAuthors = append(postAuthors, me)
			texts = append(texts, fmt.Sprintf("Запись %d: %s", j+1, postPhrases[r.IntN(len(postPhrases))]))
			times = append(times, opts.Now.Add(-time.Duration(r.Int64N(int64(postSpan)))).Truncate(time.Microsecond))
		}
	}
	err = db.Transact(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO friends (user_id, friend_id)
			SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING`, users, authors)
		if err != nil {
			return fmt.Errorf("friends: %w", err)
		}
		friends = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `INSERT INTO posts (id, author_user_id, text, created_at, updated_at)
			SELECT id, a, t, c, c FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) AS x (id, a, t, c)
			ON CONFLICT DO NOTHING`, postIDs, postAuthors, texts, times)
		if err != nil {
			return fmt.Errorf("posts: %w", err)
		}
		posts = tag.RowsAffected()
		return nil
	})
	return friends, posts, err
}

// postID is the id of post j of person i: random bits drawn from (seed, i,
// j) in a UUIDv4 layout.
func postID(seed int64, i, j int) uuid.UUID {
	var id uuid.UUID
	a := mix64(uint64(seed) ^ mix64(uint64(i)<<20^uint64(j)+0x7f4a7c159e3779b9))
	b := mix64(a ^ 0x94d049bb133111eb)
	binary.BigEndian.PutUint64(id[0:8], a&^0xf000|0x4000)                         // version 4
	binary.BigEndian.PutUint64(id[8:16], b&0x3fffffffffffffff|0x8000000000000000) // variant 10
	return id
}

// postPhrases are the bodies of seeded posts.
var postPhrases = []string{
	"Сегодня отличная погода для прогулки по набережной.",
	"Прочитал интересную книгу о распределённых системах.",
	"Кто идёт на концерт в субботу?",
	"Испекла пирог с яблоками, рецепт в комментариях.",
	"Наконец-то закончил ремонт на кухне.",
	"Поделитесь, какие фильмы посмотреть на выходных?",
	"Утренняя пробежка — лучшее начало дня.",
	"Вернулся из отпуска, фотографии скоро.",
}
