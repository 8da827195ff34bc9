package postgres

import (
	"context"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// UserStore implements social.UserStore.
type UserStore struct {
	db *dbroute.DB
}

var _ social.UserStore = (*UserStore)(nil)

// NewUserStore returns a UserStore over db.
func NewUserStore(db *dbroute.DB) *UserStore { return &UserStore{db: db} }

const userNotFound = "user not found"

// CreateUser stores u with the password hash and sets u.ID.
// Returns EINVALID for values the schema refuses; nothing is stored then.
func (s *UserStore) CreateUser(ctx context.Context, u *social.User, passwordHash []byte) error {
	id, err := newID()
	if err != nil {
		return err
	}
	err = s.db.Transact(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO users (id, first_name, second_name, birthdate, biography, city, password_hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			id, u.FirstName, u.SecondName, dateOnly(u), u.Biography, u.City, passwordHash)
		return err
	})
	if err != nil {
		return mapError("create user", userNotFound, err)
	}
	u.ID = id.String()
	return nil
}

// dateOnly returns the birthdate as a date parameter: the calendar day of
// u.Birthdate in its own location, or NULL (which the schema refuses) for
// the zero time.
func dateOnly(u *social.User) any {
	if u.Birthdate.IsZero() {
		return nil
	}
	y, m, d := u.Birthdate.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// User returns the user with the id, from a replica. Returns ENOTFOUND, and
// EINVALID for an id that is not a UUID.
func (s *UserStore) User(ctx context.Context, id string) (social.User, error) {
	uid, err := parseID("id", id)
	if err != nil {
		return social.User{}, err
	}
	var u social.User
	err = s.db.ReadReplica(ctx, func(q dbroute.Querier) error {
		rows, err := q.Query(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, uid)
		if err != nil {
			return err
		}
		u, err = pgx.CollectExactlyOneRow(rows, scanUser)
		return err
	})
	if err != nil {
		return social.User{}, mapError("get user", userNotFound, err)
	}
	return u, nil
}

// PasswordHash returns the user's password hash, from the primary so that a
// login right after registration finds it. Returns ENOTFOUND, EINVALID.
func (s *UserStore) PasswordHash(ctx context.Context, id string) ([]byte, error) {
	uid, err := parseID("id", id)
	if err != nil {
		return nil, err
	}
	var hash []byte
	err = s.db.ReadPrimary(ctx, func(q dbroute.Querier) error {
		return q.QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, uid).Scan(&hash)
	})
	if err != nil {
		return nil, mapError("get password hash", userNotFound, err)
	}
	return hash, nil
}

// SearchUsers returns users whose first and second names start with the
// prefixes (case-sensitive; %, _ and \ match themselves), ordered by id,
// from a replica. A Limit of 0 or less means social.DefaultSearchLimit and
// one above social.MaxSearchLimit is cut to it; a negative Offset is EINVALID.
// The result is never nil.
//
// The query is shaped for users_name_prefix_idx (docs/SEARCH_INDEX.md): the
// index is keyed by the first two letters of both names, then id. When both
// prefixes have two letters or more, the matching ids come from one bucket
// of that index already in id order, and the LIKE on the full prefixes is
// checked on the index's included names, so a page costs about
// (offset+limit) index entries plus limit row fetches. A one-letter prefix
// scans the range of buckets that starts with it and sorts the matches. An
// empty prefix (which the API refuses) is served without the index.
func (s *UserStore) SearchUsers(ctx context.Context, q social.UserSearch) ([]social.User, error) {
	if q.Offset < 0 {
		return nil, social.Invalid(map[string]string{"offset": "must not be negative"})
	}
	limit := q.Limit
	if limit <= 0 {
		limit = social.DefaultSearchLimit
	}
	limit = min(limit, social.MaxSearchLimit)
	first, second := escapeLike(q.FirstNamePrefix), escapeLike(q.SecondNamePrefix)
	fb, fok := prefixBucket(q.FirstNamePrefix)
	sb, sok := prefixBucket(q.SecondNamePrefix)
	var sql string
	var args []any
	switch {
	case fok && sok && fb.whole && sb.whole:
		sql, args = searchInBucket, []any{fb.lo, sb.lo, first, second, limit, q.Offset}
	case fok && sok:
		sql, args = searchInBucketRange, []any{fb.lo, fb.hi, sb.lo, sb.hi, first, second, limit, q.Offset}
	default:
		sql, args = searchUnindexed, []any{first, second, limit, q.Offset}
	}
	users := []social.User{}
	err := s.db.ReadReplica(ctx, func(db dbroute.Querier) error {
		users = users[:0] // a retry on another node starts over
		rows, err := db.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		users, err = pgx.AppendRows(users, rows, scanUser)
		return err
	})
	if err != nil {
		return nil, mapError("search users", userNotFound, err)
	}
	return users, nil
}

// The three shapes of the search. The inner query finds the page's ids from
// the index alone; the outer one fetches those rows.
const (
	searchInBucket = `SELECT ` + userColumnsOfU + ` FROM (
			SELECT id FROM users
			WHERE left(first_name, 2) COLLATE "C" = $1 AND left(second_name, 2) COLLATE "C" = $2
				AND first_name LIKE $3 || '%' AND second_name LIKE $4 || '%'
			ORDER BY id LIMIT $5 OFFSET $6
		) page JOIN users u USING (id)
		ORDER BY u.id`
	searchInBucketRange = `SELECT ` + userColumnsOfU + ` FROM (
			SELECT id FROM users
			WHERE left(first_name, 2) COLLATE "C" >= $1 AND left(first_name, 2) COLLATE "C" < $2
				AND left(second_name, 2) COLLATE "C" >= $3 AND left(second_name, 2) COLLATE "C" < $4
				AND first_name LIKE $5 || '%' AND second_name LIKE $6 || '%'
			ORDER BY id LIMIT $7 OFFSET $8
		) page JOIN users u USING (id)
		ORDER BY u.id`
	searchUnindexed = `SELECT ` + userColumns + ` FROM users
		WHERE first_name LIKE $1 || '%' AND second_name LIKE $2 || '%'
		ORDER BY id LIMIT $3 OFFSET $4`
)

// bucket is the range of users_name_prefix_idx buckets (the first two
// letters of a name, compared bytewise) that holds every name starting with
// a prefix: [lo, hi). whole means the range is the single bucket lo.
type bucket struct {
	lo, hi string
	whole  bool
}

// prefixBucket returns the buckets of prefix, or false for an empty prefix
// (or one that ends in the last code point, which has no successor).
func prefixBucket(prefix string) (bucket, bool) {
	r := []rune(prefix)
	if len(r) == 0 {
		return bucket{}, false
	}
	r = r[:min(len(r), 2)]
	lo := string(r)
	last := r[len(r)-1]
	if last >= unicode.MaxRune {
		return bucket{}, false
	}
	r[len(r)-1] = last + 1
	if last+1 == 0xD800 { // skip the surrogates, which UTF-8 cannot hold
		r[len(r)-1] = 0xE000
	}
	return bucket{lo: lo, hi: string(r), whole: len(r) == 2}, true
}

// escapeLike makes every character of s match itself in a LIKE pattern with
// the default escape character, backslash.
func escapeLike(s string) string {
	return likeEscaper.Replace(s)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

const (
	userColumns    = `id, first_name, second_name, birthdate, biography, city`
	userColumnsOfU = `u.id, u.first_name, u.second_name, u.birthdate, u.biography, u.city`
)

func scanUser(row pgx.CollectableRow) (social.User, error) {
	var u social.User
	var id uuid.UUID
	err := row.Scan(&id, &u.FirstName, &u.SecondName, &u.Birthdate, &u.Biography, &u.City)
	u.ID = id.String()
	return u, err
}

// CopyFromer is what CopyUsers writes through: a pgx.Tx (to commit the rows
// with other bookkeeping), a *pgx.Conn or a *pgxpool.Pool.
type CopyFromer interface {
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// CopyUsers bulk-inserts users with COPY, every row with the same password
// hash. Each user must carry its ID (a UUID); the bulk loader derives ids
// itself so that a load can resume. A bad row fails the whole COPY: EINVALID
// for values the schema refuses, ECONFLICT for an id that already exists.
func CopyUsers(ctx context.Context, dst CopyFromer, users []social.User, passwordHash []byte) (int64, error) {
	ids := make([]uuid.UUID, len(users))
	for i := range users {
		id, err := parseID("id", users[i].ID)
		if err != nil {
			return 0, err
		}
		ids[i] = id
	}
	src := pgx.CopyFromSlice(len(users), func(i int) ([]any, error) {
		u := &users[i]
		return []any{ids[i], u.FirstName, u.SecondName, dateOnly(u), u.Biography, u.City, passwordHash}, nil
	})
	n, err := dst.CopyFrom(ctx, pgx.Identifier{"users"},
		[]string{"id", "first_name", "second_name", "birthdate", "biography", "city", "password_hash"}, src)
	if err != nil {
		return n, mapError("copy users", userNotFound, err)
	}
	return n, nil
}
