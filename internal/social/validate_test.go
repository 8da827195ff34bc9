package social_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/social"
)

var now = time.Date(2025, 6, 15, 23, 30, 0, 0, time.UTC)

func validRegistration() social.Registration {
	return social.Registration{
		FirstName: "Ivan", SecondName: "Petrov", Birthdate: "1990-04-01",
		Biography: "likes chess", City: "Moscow", Password: "secret1",
	}
}

// fields returns the Fields of err, which must be EINVALID, or nil for nil.
func fields(t *testing.T, err error) map[string]string {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *social.Error
	if !errors.As(err, &e) || e.Code != social.EINVALID {
		t.Fatalf("error %v; want an EINVALID *social.Error", err)
	}
	return e.Fields
}

func TestRegistrationValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*social.Registration)
		want   map[string]string
	}{
		{"valid", func(*social.Registration) {}, nil},
		{"empty optional fields", func(r *social.Registration) { r.Biography, r.City = "", "" }, nil},
		{"earliest birthdate", func(r *social.Registration) { r.Birthdate = "1900-01-01" }, nil},
		{"born today", func(r *social.Registration) { r.Birthdate = "2025-06-15" }, nil},
		{"longest names in runes", func(r *social.Registration) {
			r.FirstName = strings.Repeat("ж", social.MaxNameLen)
			r.City = strings.Repeat("ж", social.MaxCityLen)
			r.Biography = strings.Repeat("ж", social.MaxBiographyLen)
		}, nil},
		{"longest password", func(r *social.Registration) { r.Password = strings.Repeat("p", social.MaxPasswordLen) }, nil},
		{"everything missing", func(r *social.Registration) { *r = social.Registration{} }, map[string]string{
			"first_name": "is required", "second_name": "is required",
			"birthdate": "is required", "password": "is required"}},
		{"blank name", func(r *social.Registration) { r.FirstName = " \t" }, map[string]string{"first_name": "is required"}},
		{"long names", func(r *social.Registration) {
			r.FirstName = strings.Repeat("a", social.MaxNameLen+1)
			r.SecondName = strings.Repeat("ж", social.MaxNameLen+1)
			r.City = strings.Repeat("c", social.MaxCityLen+1)
			r.Biography = strings.Repeat("b", social.MaxBiographyLen+1)
		}, map[string]string{
			"first_name": "must be at most 100 characters", "second_name": "must be at most 100 characters",
			"city": "must be at most 100 characters", "biography": "must be at most 4000 characters"}},
		{"invalid utf-8", func(r *social.Registration) { r.City = "Mos\xffcow" }, map[string]string{"city": "must be valid UTF-8"}},
		{"nul", func(r *social.Registration) { r.Biography = "a\x00b" }, map[string]string{"biography": "must not contain NUL characters"}},
		{"control in name", func(r *social.Registration) { r.SecondName = "Pe\ntrov" }, map[string]string{"second_name": "must not contain control characters"}},
		{"newline in biography is fine", func(r *social.Registration) { r.Biography = "line 1\nline 2" }, nil},
		{"bad date", func(r *social.Registration) { r.Birthdate = "1990-02-30" }, map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		{"date with time", func(r *social.Registration) { r.Birthdate = "1990-02-03T00:00:00Z" }, map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		{"short date", func(r *social.Registration) { r.Birthdate = "1990-2-3" }, map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		{"future date", func(r *social.Registration) { r.Birthdate = "2025-06-16" }, map[string]string{"birthdate": "must not be in the future"}},
		{"too old", func(r *social.Registration) { r.Birthdate = "1899-12-31" }, map[string]string{"birthdate": "must not be before 1900-01-01"}},
		{"short password", func(r *social.Registration) { r.Password = "12345" }, map[string]string{"password": "must be at least 6 characters"}},
		{"password over 72 bytes", func(r *social.Registration) { r.Password = strings.Repeat("ж", 37) }, map[string]string{"password": "must be at most 72 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validRegistration()
			tt.change(&r)
			u, err := r.Validate(now)
			if diff := cmp.Diff(tt.want, fields(t, err)); diff != "" {
				t.Fatalf("fields (-want +got):\n%s", diff)
			}
			if err != nil {
				return
			}
			want := social.User{FirstName: r.FirstName, SecondName: r.SecondName,
				Birthdate: mustDate(t, r.Birthdate), Biography: r.Biography, City: r.City}
			if diff := cmp.Diff(want, u); diff != "" {
				t.Errorf("user (-want +got):\n%s", diff)
			}
		})
	}
}

func mustDate(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(social.DateLayout, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestTextValidators(t *testing.T) {
	long := strings.Repeat("ж", social.MaxPostLen)
	tests := []struct {
		name string
		err  error
		want map[string]string
	}{
		{"post ok", social.ValidatePostText(long), nil},
		{"post empty", social.ValidatePostText(""), map[string]string{"text": "is required"}},
		{"post blank", social.ValidatePostText("  \n"), map[string]string{"text": "is required"}},
		{"post long", social.ValidatePostText(long + "ж"), map[string]string{"text": "must be at most 10000 characters"}},
		{"post nul", social.ValidatePostText("a\x00"), map[string]string{"text": "must not contain NUL characters"}},
		{"message ok", social.ValidateMessageText("hi\nthere"), nil},
		{"message long", social.ValidateMessageText(strings.Repeat("m", social.MaxMessageLen+1)), map[string]string{"text": "must be at most 10000 characters"}},
		{"message bad utf-8", social.ValidateMessageText("\xc3"), map[string]string{"text": "must be valid UTF-8"}},
		{"login ok", social.ValidateLoginPassword("x"), nil},
		{"login empty", social.ValidateLoginPassword(""), map[string]string{"password": "is required"}},
		{"login long", social.ValidateLoginPassword(strings.Repeat("p", 73)), map[string]string{"password": "must be at most 72 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, fields(t, tt.err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPageValidators(t *testing.T) {
	search := func(first, last string, offset, limit int) error {
		return social.UserSearch{FirstNamePrefix: first, SecondNamePrefix: last, Offset: offset, Limit: limit}.Validate()
	}
	tests := []struct {
		name string
		err  error
		want map[string]string
	}{
		{"search ok", search("I", "P", 0, 1), nil},
		{"search max", search("I", "P", 5, social.MaxSearchLimit), nil},
		{"search missing", search("", "", 0, 10), map[string]string{"first_name": "is required", "last_name": "is required"}},
		{"search bad page", search("I", "P", -1, social.MaxSearchLimit+1), map[string]string{
			"offset": "must not be negative", "limit": "must be from 1 to 1000"}},
		{"search deepest page", search("I", "P", social.MaxSearchOffset, social.MaxSearchLimit), nil},
		{"search too deep", search("I", "P", social.MaxSearchOffset+1, 1), map[string]string{"offset": "must be from 0 to 10000"}},
		{"search zero limit", search("I", "P", 0, 0), map[string]string{"limit": "must be from 1 to 1000"}},
		{"search long prefix", search(strings.Repeat("a", 101), "P", 0, 1), map[string]string{"first_name": "must be at most 100 characters"}},
		{"feed ok", social.ValidateFeedPage(0, social.MaxFeedLimit), nil},
		{"feed bad", social.ValidateFeedPage(-5, 0), map[string]string{"offset": "must not be negative", "limit": "must be from 1 to 1000"}},
		{"feed over max", social.ValidateFeedPage(0, social.MaxFeedLimit+1), map[string]string{"limit": "must be from 1 to 1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, fields(t, tt.err)); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}
