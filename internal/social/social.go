package social

import (
	"context"
	"time"
)

// Limits on input, enforced by Validate methods and by the schema.
const (
	MaxNameLen      = 100
	MaxCityLen      = 100
	MaxBiographyLen = 4000
	MinPasswordLen  = 6
	MaxPasswordLen  = 72 // bcrypt ignores bytes past 72
	MaxPostLen      = 10000
	MaxMessageLen   = 10000

	// FeedCap is how many of the newest posts of the followed users a feed
	// can page through (the course's "last 1000").
	FeedCap = 1000
	// DefaultSearchLimit and MaxSearchLimit bound /user/search so that a
	// one-letter prefix never returns the whole table.
	DefaultSearchLimit = 20
	MaxSearchLimit     = 1000
	// MaxSearchOffset bounds how deep /user/search pages: the database reads
	// offset+limit rows of the index for a page.
	MaxSearchOffset = 10_000
	// DefaultFeedLimit is the page size of /post/feed without ?limit.
	DefaultFeedLimit = 10
	MaxFeedLimit     = 1000
	// DialogListCap bounds /dialog/{id}/list to the newest messages.
	DialogListCap = 1000
)

// DateLayout is the layout of birthdates on the wire and in the database.
const DateLayout = "2006-01-02"

// User is a person's public profile.
type User struct {
	ID         string
	FirstName  string
	SecondName string
	Birthdate  time.Time // a date, UTC midnight
	Biography  string
	City       string
}

// Post is a text a user published.
type Post struct {
	ID           string
	Text         string
	AuthorUserID string
	CreatedAt    time.Time
}

// Message is one message of a dialog between two users.
type Message struct {
	ID        string
	From      string
	To        string
	Text      string
	CreatedAt time.Time
}

// UserSearch asks for users whose first and second names start with the
// given prefixes, ordered by id.
type UserSearch struct {
	FirstNamePrefix  string
	SecondNamePrefix string
	Limit            int
	Offset           int
}

// UserStore keeps users and their password hashes.
type UserStore interface {
	// CreateUser stores u with the password hash and sets u.ID.
	// Returns EINVALID for values the schema refuses.
	CreateUser(ctx context.Context, u *User, passwordHash []byte) error
	// User returns the user with the id. Returns ENOTFOUND.
	User(ctx context.Context, id string) (User, error)
	// PasswordHash returns the user's password hash. Returns ENOTFOUND.
	PasswordHash(ctx context.Context, id string) ([]byte, error)
	// SearchUsers returns users matching both prefixes, ordered by id.
	SearchUsers(ctx context.Context, q UserSearch) ([]User, error)
}

// FriendStore keeps who follows whom. A friendship is one-directional.
type FriendStore interface {
	// SetFriend makes userID follow friendID; setting it twice is a no-op.
	// Returns ENOTFOUND when friendID does not exist, EINVALID when they are the same.
	SetFriend(ctx context.Context, userID, friendID string) error
	// DeleteFriend stops userID following friendID; a missing one is a no-op.
	DeleteFriend(ctx context.Context, userID, friendID string) error
}

// PostStore keeps posts and builds feeds.
type PostStore interface {
	// CreatePost stores p and sets p.ID and p.CreatedAt.
	CreatePost(ctx context.Context, p *Post) error
	// UpdatePost replaces the text of the author's post.
	// Returns ENOTFOUND when there is no such post, EFORBIDDEN when it is someone else's.
	UpdatePost(ctx context.Context, authorID, postID, text string) error
	// DeletePost deletes the author's post. Returns ENOTFOUND, EFORBIDDEN.
	DeletePost(ctx context.Context, authorID, postID string) error
	// Post returns a post. Returns ENOTFOUND.
	Post(ctx context.Context, id string) (Post, error)
	// Feed returns posts of the users userID follows, newest first, within
	// the newest FeedCap of them.
	Feed(ctx context.Context, userID string, offset, limit int) ([]Post, error)
}

// DialogStore keeps messages between users.
type DialogStore interface {
	// SendMessage stores m and sets m.ID and m.CreatedAt.
	// Returns ENOTFOUND when the recipient does not exist, EINVALID when m.From == m.To.
	SendMessage(ctx context.Context, m *Message) error
	// Dialog returns the messages between a and b, oldest first, within the
	// newest DialogListCap of them.
	Dialog(ctx context.Context, a, b string) ([]Message, error)
}
