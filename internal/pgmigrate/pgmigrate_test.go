package pgmigrate_test

import (
	"testing"
	"testing/fstest"

	"socnet/internal/pgmigrate"
)

func TestLoadOrdersAndChecksFiles(t *testing.T) {
	set := pgmigrate.Set{Files: fstest.MapFS{
		"m/0002_b.sql": {Data: []byte("SELECT 2")},
		"m/0001_a.sql": {Data: []byte("SELECT 1")},
	}, Dir: "m", Table: "t", LockKey: 1}
	ms, err := set.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Version != 1 || ms[1].Name != "b" || ms[0].Checksum == ms[1].Checksum {
		t.Fatalf("Load = %+v", ms)
	}
	for name, files := range map[string]fstest.MapFS{
		"bad name":          {"m/1_a.sql": {Data: []byte("x")}},
		"duplicate version": {"m/0001_a.sql": {Data: []byte("x")}, "m/0001_b.sql": {Data: []byte("y")}},
	} {
		if _, err := (pgmigrate.Set{Files: files, Dir: "m", Table: "t"}).Load(); err == nil {
			t.Errorf("%s: Load accepted it", name)
		}
	}
}
