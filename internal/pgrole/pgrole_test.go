package pgrole_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"socnet/internal/pgrole"
	"socnet/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestEnsureCreatesALoginRoleThatNeedsItsPassword(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.MustDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for i, pw := range []string{"first-password", "second-password"} { // the second call changes it
		if err := pgrole.Ensure(ctx, conn, "pgrole_test_app", pw, "NOSUPERUSER NOCREATEDB"); err != nil {
			t.Fatalf("Ensure #%d: %v", i+1, err)
		}
	}
	var stored string
	if err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'pgrole_test_app'").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$4096:") {
		t.Fatalf("stored password %q is not a SCRAM verifier", stored)
	}
	as := func(pw string) error {
		u, _ := url.Parse(dsn)
		u.User = url.UserPassword("pgrole_test_app", pw)
		c, err := pgx.Connect(ctx, u.String())
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	if err := as("second-password"); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	if err := as("first-password"); err == nil {
		t.Fatal("login with the old password succeeded")
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP ROLE IF EXISTS pgrole_test_app") })
}

func TestEnsureRefusesBadInputAndSuperusers(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.MustDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, tc := range []struct{ role, pw, attrs string }{
		{"Bad-Name", "pw", ""},
		{"pg_monitor", "pw", ""},
		{"ok_role", "", ""},
		{"ok_role", "pw", "SUPERUSER; DROP TABLE x"},
		{"postgres", "pw", ""}, // the superuser
	} {
		if err := pgrole.Ensure(ctx, conn, tc.role, tc.pw, tc.attrs); err == nil {
			t.Errorf("Ensure(%q, %q, %q) accepted", tc.role, tc.pw, tc.attrs)
		}
	}
}
