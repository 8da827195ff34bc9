package social

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Fields of an EINVALID error returned by the Validate functions are keyed by
// the names the API gives them (first_name, last_name, text, ...), so that a
// client can point at the offending input.

// MinBirthdate is the earliest birthdate a user may give, in DateLayout.
const MinBirthdate = "1900-01-01"

var minBirthdate = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

// Registration is what a person submits to sign up: a profile with the
// birthdate as written on the wire (DateLayout), and a password.
type Registration struct {
	FirstName  string
	SecondName string
	Birthdate  string
	Biography  string
	City       string
	Password   string
}

// Validate checks r as of now and returns the user it describes. A bad field
// returns EINVALID naming every problem. Names are required; biography and
// city may be empty; the birthdate must be a real date from MinBirthdate to
// today (UTC); the password needs MinPasswordLen characters and at most
// MaxPasswordLen bytes, the most bcrypt reads.
func (r Registration) Validate(now time.Time) (User, error) {
	p := make(map[string]string)
	checkLine(p, "first_name", r.FirstName, MaxNameLen, true)
	checkLine(p, "second_name", r.SecondName, MaxNameLen, true)
	checkText(p, "biography", r.Biography, MaxBiographyLen, false)
	checkLine(p, "city", r.City, MaxCityLen, false)
	birthdate := checkBirthdate(p, r.Birthdate, now)
	switch {
	case r.Password == "":
		p["password"] = "is required"
	case utf8.RuneCountInString(r.Password) < MinPasswordLen:
		p["password"] = fmt.Sprintf("must be at least %d characters", MinPasswordLen)
	case len(r.Password) > MaxPasswordLen:
		p["password"] = fmt.Sprintf("must be at most %d bytes", MaxPasswordLen)
	}
	if len(p) > 0 {
		return User{}, Invalid(p)
	}
	return User{
		FirstName:  r.FirstName,
		SecondName: r.SecondName,
		Birthdate:  birthdate,
		Biography:  r.Biography,
		City:       r.City,
	}, nil
}

// ValidateLoginPassword checks the shape of a password given to log in: it
// must be present and no longer than any password Registration accepts.
// Returns EINVALID.
func ValidateLoginPassword(password string) error {
	switch {
	case password == "":
		return Invalid(map[string]string{"password": "is required"})
	case len(password) > MaxPasswordLen:
		return Invalid(map[string]string{"password": fmt.Sprintf("must be at most %d bytes", MaxPasswordLen)})
	}
	return nil
}

// ValidatePostText checks the text of a new or edited post. Returns EINVALID.
func ValidatePostText(text string) error {
	return validateText("text", text, MaxPostLen)
}

// ValidateMessageText checks the text of a dialog message. Returns EINVALID.
func ValidateMessageText(text string) error {
	return validateText("text", text, MaxMessageLen)
}

// Validate checks a search: both prefixes are required, the limit is from 1
// to MaxSearchLimit and the offset from 0 to MaxSearchOffset. Returns
// EINVALID.
func (q UserSearch) Validate() error {
	p := make(map[string]string)
	checkLine(p, "first_name", q.FirstNamePrefix, MaxNameLen, true)
	checkLine(p, "last_name", q.SecondNamePrefix, MaxNameLen, true)
	checkPage(p, q.Offset, q.Limit, MaxSearchLimit)
	if q.Offset > MaxSearchOffset {
		p["offset"] = fmt.Sprintf("must be from 0 to %d", MaxSearchOffset)
	}
	if len(p) > 0 {
		return Invalid(p)
	}
	return nil
}

// ValidateFeedPage checks a page of a feed: the offset is not negative and
// the limit is from 1 to MaxFeedLimit. Returns EINVALID.
func ValidateFeedPage(offset, limit int) error {
	p := make(map[string]string)
	checkPage(p, offset, limit, MaxFeedLimit)
	if len(p) > 0 {
		return Invalid(p)
	}
	return nil
}

func validateText(field, s string, max int) error {
	p := make(map[string]string, 1)
	checkText(p, field, s, max, true)
	if len(p) > 0 {
		return Invalid(p)
	}
	return nil
}

func checkPage(p map[string]string, offset, limit, maxLimit int) {
	if offset < 0 {
		p["offset"] = "must not be negative"
	}
	if limit < 1 || limit > maxLimit {
		p["limit"] = fmt.Sprintf("must be from 1 to %d", maxLimit)
	}
}

// checkText records in p what is wrong with a free text: emptiness when
// required, invalid UTF-8, NUL characters (PostgreSQL text cannot hold
// them) and length in characters.
func checkText(p map[string]string, field, s string, max int, required bool) bool {
	switch {
	case required && strings.TrimSpace(s) == "":
		p[field] = "is required"
	case !utf8.ValidString(s):
		p[field] = "must be valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		p[field] = "must not contain NUL characters"
	case len(s) > max && utf8.RuneCountInString(s) > max:
		p[field] = fmt.Sprintf("must be at most %d characters", max)
	default:
		return true
	}
	return false
}

// checkLine is checkText for one-line values such as names, which must also
// be free of control characters.
func checkLine(p map[string]string, field, s string, max int, required bool) {
	if !checkText(p, field, s, max, required) {
		return
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		p[field] = "must not contain control characters"
	}
}

func checkBirthdate(p map[string]string, s string, now time.Time) time.Time {
	if s == "" {
		p["birthdate"] = "is required"
		return time.Time{}
	}
	d, err := time.Parse(DateLayout, s)
	if err != nil {
		p["birthdate"] = "must be a date as YYYY-MM-DD"
		return time.Time{}
	}
	y, m, day := now.UTC().Date()
	switch {
	case d.Before(minBirthdate):
		p["birthdate"] = "must not be before " + MinBirthdate
	case d.After(time.Date(y, m, day, 0, 0, 0, 0, time.UTC)):
		p["birthdate"] = "must not be in the future"
	}
	return d
}
