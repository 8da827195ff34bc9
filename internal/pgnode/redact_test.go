package pgnode

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, secret string }{
		{`connect to host=127.0.0.1 port=5432 user=app password=s3cr3t dbname=x`, "s3cr3t"},
		{`host=h PASSWORD = 'it\'s quoted' user=u`, "quoted"},
		{`failed: postgres://app:hunter2@127.0.0.1:5432/db?sslmode=disable`, "hunter2"},
		{`dial redis://:r3dis@10.0.0.1:6379`, "r3dis"},
	} {
		got := Redact(tc.in)
		if strings.Contains(got, tc.secret) {
			t.Errorf("Redact(%q) = %q: the password is still there", tc.in, got)
		}
		if !strings.Contains(got, "REDACTED") {
			t.Errorf("Redact(%q) = %q: no mark where the password was", tc.in, got)
		}
	}
	if in := "user=app dbname=x host=/tmp"; Redact(in) != in {
		t.Errorf("Redact changed a string without a password: %q", Redact(in))
	}
}
