package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"socnet/internal/postgres"
	"socnet/internal/social"
)

func TestCreateUserAndGet(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	in := social.User{FirstName: "Константин", SecondName: "Осипов",
		Birthdate: time.Date(1984, 2, 29, 0, 0, 0, 0, time.UTC), Biography: "Инженер. Люблю походы.", City: "Санкт-Петербург"}
	u := in
	if err := e.users.CreateUser(ctx, &u, []byte("$2a$10$somehash")); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	id, err := uuid.Parse(u.ID)
	if err != nil || id.Version() != 7 {
		t.Fatalf("CreateUser set ID %q, want a UUIDv7", u.ID)
	}
	got, err := e.users.User(ctx, u.ID)
	if err != nil {
		t.Fatalf("User: %v", err)
	}
	in.ID = u.ID
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("User (-want +got):\n%s", diff)
	}
	hash, err := e.users.PasswordHash(ctx, u.ID)
	if err != nil || string(hash) != "$2a$10$somehash" {
		t.Errorf("PasswordHash = %q, %v", hash, err)
	}
}

func TestCreateUserBirthdateIsTheCalendarDay(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	msk := time.FixedZone("MSK", 3*3600)
	u := social.User{FirstName: "Анна", SecondName: "Петрова", Birthdate: time.Date(2001, 1, 1, 0, 30, 0, 0, msk)}
	if err := e.users.CreateUser(ctx, &u, []byte("h")); err != nil {
		t.Fatal(err)
	}
	got, err := e.users.User(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC); !got.Birthdate.Equal(want) {
		t.Errorf("birthdate %v, want %v", got.Birthdate, want)
	}
}

func TestCreateUserInvalid(t *testing.T) {
	good := social.User{FirstName: "Иван", SecondName: "Иванов", Birthdate: time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)}
	tests := []struct {
		name  string
		edit  func(*social.User)
		hash  string
		field string // "" when the error names no field
	}{
		{"empty first name", func(u *social.User) { u.FirstName = "" }, "h", "first_name"},
		{"long second name", func(u *social.User) { u.SecondName = strings.Repeat("я", 101) }, "h", "second_name"},
		{"long biography", func(u *social.User) { u.Biography = strings.Repeat("б", 4001) }, "h", "biography"},
		{"long city", func(u *social.User) { u.City = strings.Repeat("г", 101) }, "h", "city"},
		{"ancient birthdate", func(u *social.User) { u.Birthdate = time.Date(1899, 12, 31, 0, 0, 0, 0, time.UTC) }, "h", "birthdate"},
		{"no birthdate", func(u *social.User) { u.Birthdate = time.Time{} }, "h", "birthdate"},
		{"empty password hash", func(*social.User) {}, "", "password"},
		{"NUL in a name", func(u *social.User) { u.FirstName = "Ив\x00ан" }, "h", ""},
		{"invalid UTF-8", func(u *social.User) { u.City = "Мос\xffква" }, "h", ""},
	}
	e := mustEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := good
			tt.edit(&u)
			err := e.users.CreateUser(context.Background(), &u, []byte(tt.hash))
			if tt.field != "" {
				wantField(t, err, tt.field)
			} else {
				wantCode(t, err, social.EINVALID)
			}
			if u.ID != "" {
				t.Errorf("ID set to %q on failure", u.ID)
			}
		})
	}
	u := good
	wantField(t, e.users.CreateUser(context.Background(), &u, nil), "password")
	if n := e.count(t, `SELECT count(*) FROM users`); n != 0 {
		t.Errorf("%d users stored by refused calls", n)
	}
	// The longest values are accepted.
	u = good
	u.FirstName, u.Biography, u.City = strings.Repeat("я", 100), strings.Repeat("б", 4000), strings.Repeat("г", 100)
	if err := e.users.CreateUser(context.Background(), &u, []byte("h")); err != nil {
		t.Errorf("CreateUser at the limits: %v", err)
	}
}

func TestUserNotFoundAndMalformed(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	_, err := e.users.User(ctx, unknownID)
	wantCode(t, err, social.ENOTFOUND)
	_, err = e.users.PasswordHash(ctx, unknownID)
	wantCode(t, err, social.ENOTFOUND)
	for _, bad := range []string{"", "42", "not-a-uuid", unknownID + "0", "{" + unknownID + "}"} {
		_, err := e.users.User(ctx, bad)
		wantField(t, err, "id")
		_, err = e.users.PasswordHash(ctx, bad)
		wantField(t, err, "id")
	}
}

func TestSearchUsers(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	people := [][2]string{
		{"Константин", "Осипов"}, {"Константин", "Осинцев"}, {"Константина", "Осипова"},
		{"Константин", "Иванов"}, {"Кон%тантин", "Оси_ов"}, {"Кон_", `Ос\ипов`}, {"Ксения", "Осипова"},
		{"Я", "Ю"}, {"Ян", "Ю\U0010FFFF"},
	}
	ids := map[[2]string]string{}
	for _, p := range people {
		ids[p] = e.mustUser(t, p[0], p[1]).ID
	}
	names := func(us []social.User) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.FirstName+" "+u.SecondName)
		}
		return out
	}
	tests := []struct {
		name  string
		q     social.UserSearch
		want  []string // in id order = creation order
		wantN int      // when want is nil: the expected count
	}{
		{"both prefixes", social.UserSearch{FirstNamePrefix: "Конст", SecondNamePrefix: "Оси"},
			[]string{"Константин Осипов", "Константин Осинцев", "Константина Осипова"}, 0},
		{"whole names", social.UserSearch{FirstNamePrefix: "Константин", SecondNamePrefix: "Осипов"},
			[]string{"Константин Осипов", "Константина Осипова"}, 0},
		{"case matters", social.UserSearch{FirstNamePrefix: "конст", SecondNamePrefix: "оси"}, []string{}, 0},
		{"percent is literal", social.UserSearch{FirstNamePrefix: "Кон%", SecondNamePrefix: "О"},
			[]string{"Кон%тантин Оси_ов"}, 0},
		{"underscore is literal", social.UserSearch{FirstNamePrefix: "Кон_", SecondNamePrefix: "Ос"},
			[]string{"Кон_ Ос\\ипов"}, 0},
		{"backslash is literal", social.UserSearch{FirstNamePrefix: "К", SecondNamePrefix: `Ос\и`},
			[]string{"Кон_ Ос\\ипов"}, 0},
		{"limit", social.UserSearch{FirstNamePrefix: "К", SecondNamePrefix: "О", Limit: 2},
			[]string{"Константин Осипов", "Константин Осинцев"}, 0},
		{"offset", social.UserSearch{FirstNamePrefix: "К", SecondNamePrefix: "О", Limit: 2, Offset: 4},
			[]string{"Кон_ Ос\\ипов", "Ксения Осипова"}, 0},
		{"offset in a bucket", social.UserSearch{FirstNamePrefix: "Ко", SecondNamePrefix: "Ос", Limit: 2, Offset: 1},
			[]string{"Константин Осинцев", "Константина Осипова"}, 0},
		{"offset past the end", social.UserSearch{FirstNamePrefix: "К", SecondNamePrefix: "О", Offset: 100}, []string{}, 0},
		{"one letter and a longer prefix", social.UserSearch{FirstNamePrefix: "К", SecondNamePrefix: "Осип"},
			[]string{"Константин Осипов", "Константина Осипова", "Ксения Осипова"}, 0},
		{"a longer prefix and one letter", social.UserSearch{FirstNamePrefix: "Константин", SecondNamePrefix: "И"},
			[]string{"Константин Иванов"}, 0},
		{"one-letter names", social.UserSearch{FirstNamePrefix: "Я", SecondNamePrefix: "Ю"},
			[]string{"Я Ю", "Ян Ю\U0010FFFF"}, 0},
		{"a prefix longer than the name", social.UserSearch{FirstNamePrefix: "Я", SecondNamePrefix: "Юр"}, []string{}, 0},
		{"the last code point", social.UserSearch{FirstNamePrefix: "Ян", SecondNamePrefix: "\U0010FFFF"}, []string{}, 0},
		{"the last code point second", social.UserSearch{FirstNamePrefix: "Ян", SecondNamePrefix: "Ю\U0010FFFF"},
			[]string{"Ян Ю\U0010FFFF"}, 0},
		{"empty prefixes match all", social.UserSearch{}, nil, len(people)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.users.SearchUsers(ctx, tt.q)
			if err != nil {
				t.Fatalf("SearchUsers: %v", err)
			}
			if got == nil {
				t.Fatal("SearchUsers returned nil, want a slice")
			}
			if tt.want == nil {
				if len(got) != tt.wantN {
					t.Fatalf("got %d users, want %d", len(got), tt.wantN)
				}
				return
			}
			if diff := cmp.Diff(tt.want, names(got), cmp.Comparer(func(a, b []string) bool {
				return fmt.Sprint(a) == fmt.Sprint(b)
			})); diff != "" {
				t.Errorf("SearchUsers(%+v) (-want +got):\n%s", tt.q, diff)
			}
			for _, u := range got {
				if ids[[2]string{u.FirstName, u.SecondName}] != u.ID {
					t.Errorf("user %s %s has id %s", u.FirstName, u.SecondName, u.ID)
				}
			}
		})
	}
	_, err := e.users.SearchUsers(ctx, social.UserSearch{FirstNamePrefix: "К", SecondNamePrefix: "О", Offset: -1})
	wantField(t, err, "offset")
}

func TestSearchUsersLimits(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	n := social.MaxSearchLimit + 5
	users := make([]social.User, n)
	for i := range users {
		users[i] = social.User{ID: uuid.Must(uuid.NewV7()).String(), FirstName: "Пётр", SecondName: fmt.Sprintf("Петров%d", i),
			Birthdate: time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)}
	}
	if _, err := postgres.CopyUsers(ctx, e.admin, users, []byte("h")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ limit, want int }{
		{0, social.DefaultSearchLimit}, {-3, social.DefaultSearchLimit}, {7, 7}, {n, social.MaxSearchLimit},
	} {
		got, err := e.users.SearchUsers(ctx, social.UserSearch{FirstNamePrefix: "Пёт", SecondNamePrefix: "Пет", Limit: tt.limit})
		if err != nil || len(got) != tt.want {
			t.Errorf("limit %d: %d users, %v; want %d", tt.limit, len(got), err, tt.want)
		}
		for i := 1; i < len(got); i++ {
			if got[i-1].ID >= got[i].ID {
				t.Fatalf("limit %d: not ordered by id at %d", tt.limit, i)
			}
		}
	}
}

func TestCopyUsers(t *testing.T) {
	e := mustEnv(t)
	ctx := context.Background()
	mk := func(first string) social.User {
		return social.User{ID: uuid.Must(uuid.NewV7()).String(), FirstName: first, SecondName: "Смирнов",
			Birthdate: time.Date(1980, 3, 8, 0, 0, 0, 0, time.UTC), City: "Омск", Biography: "Читаю."}
	}
	rows := []social.User{mk("Андрей"), mk("Борис"), mk("Вадим")}
	n, err := postgres.CopyUsers(ctx, e.admin, rows, []byte("shared-hash"))
	if err != nil || n != 3 {
		t.Fatalf("CopyUsers = %d, %v", n, err)
	}
	for _, want := range rows {
		got, err := e.users.User(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("copied user (-want +got):\n%s", diff)
		}
		if h, _ := e.users.PasswordHash(ctx, want.ID); string(h) != "shared-hash" {
			t.Errorf("hash %q", h)
		}
	}

	bad := []struct {
		name string
		rows []social.User
		code string
	}{
		{"an existing id", []social.User{mk("Глеб"), rows[0]}, social.ECONFLICT},
		{"a refused value", []social.User{mk("Глеб"), mk("")}, social.EINVALID},
		{"a malformed id", []social.User{mk("Глеб"), {ID: "x", FirstName: "Д", SecondName: "Е"}}, social.EINVALID},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := postgres.CopyUsers(ctx, e.admin, tt.rows, []byte("h"))
			wantCode(t, err, tt.code)
			if n := e.count(t, `SELECT count(*) FROM users`); n != 3 {
				t.Errorf("%d users after a failed copy, want 3", n)
			}
		})
	}
}
