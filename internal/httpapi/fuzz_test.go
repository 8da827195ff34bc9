package httpapi_test

import (
	"testing"
)

// checkFuzzReply asserts what any body must get: never a 5xx, and for a
// refusal a JSON error that names the request (client.check has matched it
// against api/openapi.yaml already).
func checkFuzzReply(t *testing.T, body []byte, r reply) {
	t.Helper()
	if r.Status >= 500 {
		t.Fatalf("body %q: status %d: %s", body, r.Status, r.Body)
	}
	if r.Status != 200 {
		if e := r.error(t); e.RequestID == "" || e.RequestID != r.Header.Get("X-Request-Id") {
			t.Fatalf("body %q: error %+v without the request id %q", body, e, r.Header.Get("X-Request-Id"))
		}
	}
}

func FuzzDecodeRegister(f *testing.F) {
	for _, seed := range []string{
		`{"first_name":"Ivan","second_name":"Petrov","birthdate":"1990-04-01","biography":"b","city":"c","password":"secret1"}`,
		`{"first_name":"Ivan","second_name":"Petrov","birthdate":"1990-02-30","password":"secret1"}`,
		`{"first_name":"a\u0000","second_name":"\ud800","birthdate":"2999-01-01","password":"x"}`,
		`{"first_name":1,"second_name":null,"birthdate":[],"password":{}}`,
		`{"FIRST_NAME":"Ivan"}`,
		`{"first_name":"Ivan"} []`,
		"{\"first_name\":\"\xff\"}",
		`[`, `null`, ``, `"`, `{"a":`,
	} {
		f.Add([]byte(seed))
	}
	e := mustEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := e.do(t, request{method: "POST", path: "/user/register", body: body})
		checkFuzzReply(t, body, r)
	})
}

func FuzzDecodePostCreate(f *testing.F) {
	for _, seed := range []string{
		`{"text":"hello"}`,
		`{"text":""}`,
		`{"text":"\u0000"}`,
		`{"text":"a","id":"x"}`,
		`{"text":["a"]}`,
		`{"text":"a"}{"text":"b"}`,
		"{\"text\":\"\xc3\x28\"}",
		`{"text":"\ud83d\ude00"}`,
		`{`, `}`, `0`, ``,
	} {
		f.Add([]byte(seed))
	}
	e := mustEnv(f)
	_, token := e.mustUser(f, "Fuzz", "Author")
	f.Fuzz(func(t *testing.T, body []byte) {
		r := e.do(t, request{method: "POST", path: "/post/create", token: token, body: body})
		checkFuzzReply(t, body, r)
	})
}
