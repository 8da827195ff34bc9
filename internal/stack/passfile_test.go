package stack_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"

	"socnet/internal/stack"
)

func TestPassfileDSNs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pgpass")
	in := []string{
		"postgres://postgres:s3cret@127.0.0.1:5432/postgres?sslmode=disable",
		"postgres://postgres:with%3Acolon%5C@127.0.0.1:5433/socnet?sslmode=disable",
		"postgres://nopassword@127.0.0.1:5434/x",
	}
	out, err := stack.PassfileDSNs(path, in)
	if err != nil {
		t.Fatal(err)
	}
	passwords := []string{"s3cret", `with:colon\`, ""}
	for i, dsn := range out {
		if strings.Contains(dsn, "s3cret") || strings.Contains(dsn, "colon") {
			t.Errorf("DSN %d still carries its password: %s", i, dsn)
		}
		// pgx (and libpq) find the password in the passfile.
		cfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			t.Fatalf("parse %s: %v", dsn, err)
		}
		if cfg.Password != passwords[i] {
			t.Errorf("DSN %d: password from the passfile = %q, want %q", i, cfg.Password, passwords[i])
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("passfile: %v, %v; want mode 0600", fi.Mode(), err)
	}

	// A second call for other servers keeps the first ones' entries.
	if _, err := stack.PassfileDSNs(path, []string{"postgres://postgres:other@127.0.0.1:6000/postgres"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	want := "127.0.0.1:5432:*:postgres:s3cret\n127.0.0.1:5433:*:postgres:with\\:colon\\\\\n127.0.0.1:6000:*:postgres:other\n"
	if diff := cmp.Diff(want, string(data)); diff != "" {
		t.Errorf("passfile (-want +got):\n%s", diff)
	}
	if _, err := stack.PassfileDSNs(path, []string{"host=127.0.0.1 password=x"}); err == nil || strings.Contains(err.Error(), "password=x") {
		t.Errorf("a keyword/value DSN: %v, want an error that does not repeat it", err)
	}
}
