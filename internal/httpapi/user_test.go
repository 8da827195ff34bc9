package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/social"
)

// userJSON is a user as the API returns it.
type userJSON struct {
	ID         string `json:"id"`
	FirstName  string `json:"first_name"`
	SecondName string `json:"second_name"`
	Birthdate  string `json:"birthdate"`
	Biography  string `json:"biography"`
	City       string `json:"city"`
}

func TestRegisterGetLogin(t *testing.T) {
	e := mustEnv(t)
	u := newUser{FirstName: "Анна", SecondName: "O'Neil", Birthdate: "1985-12-31",
		Biography: "line one\nline two <b>", City: "Санкт-Петербург", Password: "пароль-7"}
	id := e.mustRegister(t, u)

	var got userJSON
	e.do(t, request{method: "GET", path: "/user/get/" + id}).wantStatus(t, 200).json(t, &got)
	want := userJSON{ID: id, FirstName: u.FirstName, SecondName: u.SecondName, Birthdate: u.Birthdate,
		Biography: u.Biography, City: u.City}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("user (-want +got):\n%s", diff)
	}

	// Ids are accepted in upper case and answered in the canonical form.
	e.do(t, request{method: "GET", path: "/user/get/" + strings.ToUpper(id)}).wantStatus(t, 200).json(t, &got)
	if got.ID != id {
		t.Errorf("id = %q; want %q", got.ID, id)
	}

	var login struct {
		Token string `json:"token"`
	}
	e.do(t, request{method: "POST", path: "/login", body: map[string]string{"id": id, "password": u.Password}}).
		wantStatus(t, 200).json(t, &login)
	if sub, err := e.tokens.Verify(login.Token); err != nil || sub != id {
		t.Errorf("token names %q, %v; want %q", sub, err, id)
	}

	// The password is stored as a bcrypt hash, never as given.
	hash, err := e.users.PasswordHash(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(hash), "$2") || strings.Contains(string(hash), u.Password) {
		t.Errorf("stored hash %q is not a bcrypt hash", hash)
	}
}

func TestRegisterOptionalFields(t *testing.T) {
	e := mustEnv(t)
	id := e.mustRegister(t, newUser{FirstName: "A", SecondName: "B", Birthdate: "1900-01-01", Password: "123456"})
	var got userJSON
	e.do(t, request{method: "GET", path: "/user/get/" + id}).wantStatus(t, 200).json(t, &got)
	if got.Biography != "" || got.City != "" || got.Birthdate != "1900-01-01" {
		t.Errorf("user = %+v; want empty biography and city, birthdate 1900-01-01", got)
	}
	// Absent optional fields are the same as empty ones.
	e.do(t, request{method: "POST", path: "/user/register",
		body: `{"first_name":"A","second_name":"B","birthdate":"2000-02-29","password":"123456"}`}).wantStatus(t, 200)
}

// badBody is a request body the API must refuse without writing anything.
type badBody struct {
	name   string
	body   any
	status int
	fields map[string]string // the error's fields, for status 400
}

// commonBadBodies are refused by every route that reads a body.
func commonBadBodies() []badBody {
	return []badBody{
		{"empty", "", 400, map[string]string{"body": "is required"}},
		{"whitespace", " \n\t", 400, map[string]string{"body": "is required"}},
		{"malformed", `{"text": "a"`, 400, map[string]string{"body": "is truncated JSON"}},
		{"syntax error", `{"text" "a"}`, 400, map[string]string{"body": "is malformed JSON near byte 9"}},
		{"array", `[{"text":"a"}]`, 400, map[string]string{"body": "must be a JSON object"}},
		{"string", `"text"`, 400, map[string]string{"body": "must be a JSON object"}},
		{"number", `12`, 400, map[string]string{"body": "must be a JSON object"}},
		{"trailing object", `{} {}`, 400, map[string]string{"body": "must hold a single JSON object"}},
		{"trailing garbage", `{}x`, 400, map[string]string{"body": "must hold a single JSON object"}},
		{"unknown field", `{"nickname":"x"}`, 400, map[string]string{"nickname": "is not a known field"}},
		{"long unknown field", `{"` + strings.Repeat("k", 500) + `":1}`, 400,
			map[string]string{strings.Repeat("k", 64): "is not a known field"}},
		{"invalid utf-8", "{\"text\":\"\xff\xfe\"}", 400, map[string]string{"body": "must be valid UTF-8"}},
		{"over 1 MiB", `{"text":"` + strings.Repeat("a", 1<<20) + `"}`, 413, nil},
		{"huge garbage", strings.Repeat("[", 2<<20), 413, nil},
	}
}

// checkBadBodies sends each body and checks the refusal and that no row
// changed.
func checkBadBodies(t *testing.T, e *env, method, path, token string, cases []badBody) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.mustCounts(t)
			r := e.do(t, request{method: method, path: path, token: token, body: tc.body}).wantStatus(t, tc.status)
			if tc.status == 400 {
				if diff := cmp.Diff(tc.fields, r.error(t).Fields); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
			}
			if after := e.mustCounts(t); after != before {
				t.Errorf("rows changed from %+v to %+v", before, after)
			}
		})
	}
}

func TestRegisterBadInput(t *testing.T) {
	e := mustEnv(t)
	valid := func(change func(map[string]any)) map[string]any {
		m := map[string]any{"first_name": "Ivan", "second_name": "Petrov", "birthdate": "1990-04-01",
			"biography": "b", "city": "c", "password": "secret1"}
		change(m)
		return m
	}
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(social.DateLayout)
	cases := append(commonBadBodies(),
		badBody{"null", `null`, 400, map[string]string{"first_name": "is required", "second_name": "is required",
			"birthdate": "is required", "password": "is required"}},
		badBody{"empty object", `{}`, 400, map[string]string{"first_name": "is required", "second_name": "is required",
			"birthdate": "is required", "password": "is required"}},
		badBody{"missing first name", valid(func(m map[string]any) { delete(m, "first_name") }), 400,
			map[string]string{"first_name": "is required"}},
		badBody{"null second name", valid(func(m map[string]any) { m["second_name"] = nil }), 400,
			map[string]string{"second_name": "is required"}},
		badBody{"blank name", valid(func(m map[string]any) { m["first_name"] = "   " }), 400,
			map[string]string{"first_name": "is required"}},
		badBody{"number name", valid(func(m map[string]any) { m["first_name"] = 12 }), 400,
			map[string]string{"first_name": "must be a string"}},
		badBody{"object city", valid(func(m map[string]any) { m["city"] = map[string]any{} }), 400,
			map[string]string{"city": "must be a string"}},
		badBody{"bool password", valid(func(m map[string]any) { m["password"] = true }), 400,
			map[string]string{"password": "must be a string"}},
		badBody{"array biography", valid(func(m map[string]any) { m["biography"] = []string{"a"} }), 400,
			map[string]string{"biography": "must be a string"}},
		badBody{"long names", valid(func(m map[string]any) {
			m["first_name"] = strings.Repeat("ж", social.MaxNameLen+1)
			m["second_name"] = strings.Repeat("a", social.MaxNameLen+1)
			m["city"] = strings.Repeat("c", social.MaxCityLen+1)
			m["biography"] = strings.Repeat("b", social.MaxBiographyLen+1)
		}), 400, map[string]string{"first_name": "must be at most 100 characters",
			"second_name": "must be at most 100 characters", "city": "must be at most 100 characters",
			"biography": "must be at most 4000 characters"}},
		badBody{"nul in name", valid(func(m map[string]any) { m["first_name"] = "a\x00b" }), 400,
			map[string]string{"first_name": "must not contain NUL characters"}},
		badBody{"newline in name", valid(func(m map[string]any) { m["second_name"] = "a\nb" }), 400,
			map[string]string{"second_name": "must not contain control characters"}},
		badBody{"not a date", valid(func(m map[string]any) { m["birthdate"] = "yesterday" }), 400,
			map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		badBody{"impossible date", valid(func(m map[string]any) { m["birthdate"] = "1990-02-30" }), 400,
			map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		badBody{"not a leap year", valid(func(m map[string]any) { m["birthdate"] = "1900-02-29" }), 400,
			map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		badBody{"date-time", valid(func(m map[string]any) { m["birthdate"] = "1990-02-03T00:00:00Z" }), 400,
			map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		badBody{"other date format", valid(func(m map[string]any) { m["birthdate"] = "03.02.1990" }), 400,
			map[string]string{"birthdate": "must be a date as YYYY-MM-DD"}},
		badBody{"future date", valid(func(m map[string]any) { m["birthdate"] = tomorrow }), 400,
			map[string]string{"birthdate": "must not be in the future"}},
		badBody{"before 1900", valid(func(m map[string]any) { m["birthdate"] = "1899-12-31" }), 400,
			map[string]string{"birthdate": "must not be before 1900-01-01"}},
		badBody{"year 0", valid(func(m map[string]any) { m["birthdate"] = "0000-01-01" }), 400,
			map[string]string{"birthdate": "must not be before 1900-01-01"}},
		badBody{"short password", valid(func(m map[string]any) { m["password"] = "12345" }), 400,
			map[string]string{"password": "must be at least 6 characters"}},
		badBody{"password over 72 bytes", valid(func(m map[string]any) { m["password"] = strings.Repeat("ж", 37) }), 400,
			map[string]string{"password": "must be at most 72 bytes"}},
		badBody{"every problem at once", `{"first_name":"","second_name":"x","birthdate":"1990-13-01","password":"1"}`, 400,
			map[string]string{"first_name": "is required", "birthdate": "must be a date as YYYY-MM-DD",
				"password": "must be at least 6 characters"}},
		badBody{"unknown field with valid ones", valid(func(m map[string]any) { m["id"] = "0195b1d2-7c3e-7a41-9f6b-3c2d1e0f9a8b" }), 400,
			map[string]string{"id": "is not a known field"}},
	)
	checkBadBodies(t, e, "POST", "/user/register", "", cases)
}

func TestLogin(t *testing.T) {
	e := mustEnv(t)
	id := e.mustRegister(t, validUser("Ivan", "Petrov"))
	login := func(body any) reply {
		return e.do(t, request{method: "POST", path: "/login", body: body})
	}

	t.Run("right password", func(t *testing.T) {
		login(map[string]string{"id": id, "password": password}).wantStatus(t, 200)
	})
	t.Run("wrong password is 401", func(t *testing.T) {
		r := login(map[string]string{"id": id, "password": password + "x"}).wantStatus(t, 401)
		if e := r.error(t); e.Kind != social.EUNAUTHORIZED || e.Message != "wrong password" {
			t.Errorf("error = %+v; want unauthorized, wrong password", e)
		}
	})
	t.Run("password over 72 bytes", func(t *testing.T) {
		r := login(map[string]string{"id": id, "password": password + strings.Repeat("x", 72)}).wantStatus(t, 400)
		if diff := cmp.Diff(map[string]string{"password": "must be at most 72 bytes"}, r.error(t).Fields); diff != "" {
			t.Errorf("fields (-want +got):\n%s", diff)
		}
	})
	t.Run("unknown user is 404", func(t *testing.T) {
		r := login(map[string]string{"id": "0195b1d2-7c3e-7a41-9f6b-3c2d1e0f9a8b", "password": password}).wantStatus(t, 404)
		if r.error(t).Kind != social.ENOTFOUND {
			t.Errorf("code = %q; want %q", r.error(t).Kind, social.ENOTFOUND)
		}
	})
	t.Run("id in upper case", func(t *testing.T) {
		var out struct{ Token string }
		login(map[string]string{"id": strings.ToUpper(id), "password": password}).wantStatus(t, 200).json(t, &out)
		if sub, _ := e.tokens.Verify(out.Token); sub != id {
			t.Errorf("token subject %q; want %q", sub, id)
		}
	})

	cases := append(commonBadBodies(),
		badBody{"empty object", `{}`, 400, map[string]string{"id": "must be a UUID"}},
		badBody{"malformed id", map[string]string{"id": "42", "password": password}, 400, map[string]string{"id": "must be a UUID"}},
		badBody{"id without dashes", map[string]string{"id": strings.ReplaceAll(id, "-", ""), "password": password}, 400,
			map[string]string{"id": "must be a UUID"}},
		badBody{"id in braces", map[string]string{"id": "{" + id + "}", "password": password}, 400,
			map[string]string{"id": "must be a UUID"}},
		badBody{"number id", `{"id": 1, "password": "x"}`, 400, map[string]string{"id": "must be a string"}},
		badBody{"missing password", map[string]string{"id": id}, 400, map[string]string{"password": "is required"}},
		badBody{"unknown field", map[string]string{"id": id, "password": password, "remember": "yes"}, 400,
			map[string]string{"remember": "is not a known field"}},
	)
	checkBadBodies(t, e, "POST", "/login", "", cases)
}

func TestUserGet(t *testing.T) {
	e := mustEnv(t)
	e.mustRegister(t, validUser("Ivan", "Petrov"))
	tests := []struct {
		path   string
		status int
	}{
		{"/user/get/0195b1d2-7c3e-7a41-9f6b-3c2d1e0f9a8b", 404},
		{"/user/get/00000000-0000-0000-0000-000000000000", 404},
		{"/user/get/42", 400},
		{"/user/get/0195b1d27c3e7a419f6b3c2d1e0f9a8b", 400},
		{"/user/get/0195b1d2-7c3e-7a41-9f6b-3c2d1e0f9a8g", 400},
		{"/user/get/0195b1d2-7c3e-7a41-9f6b-3c2d1e0f9a8b%20", 400},
		{"/user/get/%00", 400},
		{"/user/get/urn:uuid:0195b1d2-7c3e-7a41-9f6b-3c2d1e0f9a8b", 400},
		{"/user/get/" + strings.Repeat("a", 5000), 400},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.40s", tt.path), func(t *testing.T) {
			r := e.do(t, request{method: "GET", path: tt.path}).wantStatus(t, tt.status)
			if tt.status == 400 {
				if diff := cmp.Diff(map[string]string{"id": "must be a UUID"}, r.error(t).Fields); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestUserSearch(t *testing.T) {
	e := mustEnv(t)
	ids := map[string]string{}
	for _, n := range [][2]string{
		{"Ivan", "Petrov"}, {"Ivana", "Petrova"}, {"Ivan", "Sidorov"}, {"Igor", "Petrov"},
		{"ivan", "petrov"}, {"Iv%n", "Pe_rov"}, {"Пётр", "Иванов"},
	} {
		ids[n[0]+" "+n[1]] = e.mustRegister(t, validUser(n[0], n[1]))
	}
	search := func(query string) reply {
		return e.do(t, request{method: "GET", path: "/user/search?" + query})
	}
	names := func(r reply) []string {
		var us []userJSON
		r.wantStatus(t, 200).json(t, &us)
		out := []string{}
		for i, u := range us {
			if i > 0 && us[i-1].ID >= u.ID {
				t.Errorf("results not ordered by id: %s then %s", us[i-1].ID, u.ID)
			}
			if ids[u.FirstName+" "+u.SecondName] != u.ID {
				t.Errorf("user %+v is not the one registered", u)
			}
			out = append(out, u.FirstName+" "+u.SecondName)
		}
		return out
	}
	// Registration order is id order (ids are time-ordered UUIDs).
	tests := []struct {
		query string
		want  []string
	}{
		{"first_name=Iv&last_name=Pet", []string{"Ivan Petrov", "Ivana Petrova"}},
		{"first_name=Ivan&last_name=Petrov", []string{"Ivan Petrov", "Ivana Petrova"}},
		{"first_name=I&last_name=P", []string{"Ivan Petrov", "Ivana Petrova", "Igor Petrov", "Iv%n Pe_rov"}},
		{"first_name=I&last_name=P&limit=2", []string{"Ivan Petrov", "Ivana Petrova"}},
		{"first_name=I&last_name=P&limit=2&offset=2", []string{"Igor Petrov", "Iv%n Pe_rov"}},
		{"first_name=I&last_name=P&offset=3", []string{"Iv%n Pe_rov"}},
		{"first_name=I&last_name=P&offset=4", []string{}},
		{"first_name=I&last_name=P&limit=&offset=", []string{"Ivan Petrov", "Ivana Petrova", "Igor Petrov", "Iv%n Pe_rov"}},
		{"first_name=Iv%25&last_name=P", []string{"Iv%n Pe_rov"}},
		{"first_name=I&last_name=Pe_", []string{"Iv%n Pe_rov"}},
		{"first_name=%D0%9F%D1%91&last_name=%D0%98%D0%B2", []string{"Пётр Иванов"}},
		{"first_name=Ivan&last_name=Petrovich", []string{}},
		{"first_name=ivan&last_name=petrov", []string{"ivan petrov"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, names(search(tt.query))); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
		})
	}

	bad := []struct {
		query  string
		fields map[string]string
	}{
		{"", map[string]string{"first_name": "is required", "last_name": "is required"}},
		{"first_name=I", map[string]string{"last_name": "is required"}},
		{"last_name=P", map[string]string{"first_name": "is required"}},
		{"first_name=&last_name=P", map[string]string{"first_name": "is required"}},
		{"first_name=I&last_name=P&limit=0", map[string]string{"limit": "must be from 1 to 1000"}},
		{"first_name=I&last_name=P&limit=1001", map[string]string{"limit": "must be from 1 to 1000"}},
		{"first_name=I&last_name=P&limit=-1", map[string]string{"limit": "must be from 1 to 1000"}},
		{"first_name=I&last_name=P&limit=ten", map[string]string{"limit": "must be an integer"}},
		{"first_name=I&last_name=P&limit=1.5", map[string]string{"limit": "must be an integer"}},
		{"first_name=I&last_name=P&limit=99999999999999999999", map[string]string{"limit": "must be an integer"}},
		{"first_name=I&last_name=P&offset=-1", map[string]string{"offset": "must not be negative"}},
		{"first_name=I&last_name=P&offset=x&limit=y", map[string]string{"offset": "must be an integer", "limit": "must be an integer"}},
		{"first_name=" + strings.Repeat("a", 101) + "&last_name=P", map[string]string{"first_name": "must be at most 100 characters"}},
		{"first_name=%00&last_name=P", map[string]string{"first_name": "must not contain NUL characters"}},
		{"first_name=%FF&last_name=P", map[string]string{"first_name": "must be valid UTF-8"}},
	}
	for _, tt := range bad {
		t.Run("bad "+tt.query, func(t *testing.T) {
			r := search(tt.query).wantStatus(t, 400)
			if diff := cmp.Diff(tt.fields, r.error(t).Fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUserSearchLimits(t *testing.T) {
	e := mustEnv(t)
	// More users than the default limit.
	want := social.DefaultSearchLimit + 5
	for i := range want {
		e.mustRegister(t, validUser(fmt.Sprintf("Max%03d", i), "Limit"))
	}
	count := func(query string) int {
		var us []userJSON
		e.do(t, request{method: "GET", path: "/user/search?" + query}).wantStatus(t, http.StatusOK).json(t, &us)
		return len(us)
	}
	if n := count("first_name=Max&last_name=Lim"); n != social.DefaultSearchLimit {
		t.Errorf("default page has %d users; want %d", n, social.DefaultSearchLimit)
	}
	if n := count("first_name=Max&last_name=Lim&limit=1000"); n != want {
		t.Errorf("page of 1000 has %d users; want %d", n, want)
	}
	if n := count(fmt.Sprintf("first_name=Max&last_name=Lim&offset=%d", social.DefaultSearchLimit)); n != 5 {
		t.Errorf("page at offset %d has %d users; want 5", social.DefaultSearchLimit, n)
	}
}
