package seed_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/seed"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "people.csv")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func date(s string) time.Time {
	d, _ := time.Parse("2006-01-02", s)
	return d
}

func TestLoadCSV(t *testing.T) {
	db, admin := mustDB(t, "")
	ctx := context.Background()
	content := "\uFEFFАбрамов Мирон,1990-06-25,Саратов\r\n" + // 1: a byte order mark, CRLF
		"Иванова Анна,1985-01-31,Москва\r\n" + // 2
		"Петров Иван,1985-02-30,Тула\r\n" + // 3: no such day
		"Сидоров,1970-01-01,Омск\r\n" + // 4: one word
		"\r\n" + // 5: empty
		"Кузнецов Олег Петрович,1970-01-01,Омск\r\n" + // 6: three words
		"Смирнов Павел,1970-01-01\r\n" + // 7: two fields
		"Орлов Глеб,1970-01-01,\r\n" + // 8: no city
		"Белов \xffЯн,1970-01-01,Омск\r\n" + // 9: bad UTF-8
		"Волков Денис,2999-01-01,Пермь\n" + // 10: future
		"Осипова  Вера , 2001-12-01 ,Санкт-Петербург\n" + // 11: extra spaces, LF
		"Зайцев Лев,19" // 12: cut short
	path := writeFile(t, content)
	var out bytes.Buffer
	var ledger []string
	res, err := seed.LoadCSV(ctx, db, path, seed.Options{BatchSize: 2, OnBatch: func(_, _ int, ids []string) {
		ledger = append(ledger, ids...)
	}}, &out)
	if err != nil {
		t.Fatalf("LoadCSV: %v\n%s", err, out.String())
	}
	if res.Loaded != 3 || res.Target != 3 || res.Existing != 0 {
		t.Errorf("Result %+v, want 3 loaded", res)
	}
	wantBad := map[int]string{
		3: "not a YYYY-MM-DD date", 4: "want «Фамилия Имя»", 5: "empty line", 6: "want «Фамилия Имя»",
		7: "want 3 comma-separated fields", 8: "city: empty", 9: "not valid UTF-8", 10: "not between 1900-01-01 and today",
		12: "last line is incomplete",
	}
	if len(res.Skipped) != len(wantBad) {
		t.Errorf("skipped %d lines, want %d: %+v", len(res.Skipped), len(wantBad), res.Skipped)
	}
	for _, b := range res.Skipped {
		if w, ok := wantBad[b.Line]; !ok || !strings.Contains(b.Reason, w) {
			t.Errorf("line %d skipped because %q; want a reason with %q", b.Line, b.Reason, w)
		}
		if !strings.Contains(out.String(), b.Reason) {
			t.Errorf("line %d's reason is not printed", b.Line)
		}
	}
	got := mustPeople(t, admin)
	for i := range got {
		got[i].ID = ""
	}
	want := []person{
		{FirstName: "Мирон", SecondName: "Абрамов", City: "Саратов", Birthdate: date("1990-06-25")},
		{FirstName: "Анна", SecondName: "Иванова", City: "Москва", Birthdate: date("1985-01-31")},
		{FirstName: "Вера", SecondName: "Осипова", City: "Санкт-Петербург", Birthdate: date("2001-12-01")},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("loaded people (-want +got):\n%s", diff)
	}
	if len(ledger) != 3 {
		t.Errorf("OnBatch reported %d ids, want 3", len(ledger))
	}

	// The same file again: nothing new.
	out.Reset()
	res, err = seed.LoadCSV(ctx, db, path, seed.Options{}, &out)
	if err != nil || res.Loaded != 0 || res.Existing != 3 {
		t.Fatalf("second LoadCSV: %+v, %v", res, err)
	}
	if !strings.Contains(out.String(), "already seeded: 3 users") {
		t.Errorf("second LoadCSV printed:\n%s", out.String())
	}
	if n := len(mustPeople(t, admin)); n != 3 {
		t.Errorf("%d users after loading the file twice, want 3", n)
	}
}

func TestLoadCSVResumesAfterCancel(t *testing.T) {
	db, admin := mustDB(t, "")
	var b strings.Builder
	for i := range 1000 {
		if i%97 == 0 {
			b.WriteString("плохая строка\n")
		}
		b.WriteString("Фёдоров Пётр,1975-04-12,Казань\n")
	}
	path := writeFile(t, b.String())
	ctx, cancel := context.WithCancel(context.Background())
	opts := seed.Options{BatchSize: 150, OnBatch: func(first, n int, _ []string) {
		if first+n == 450 {
			cancel()
		}
	}}
	if _, err := seed.LoadCSV(ctx, db, path, opts, &bytes.Buffer{}); err == nil {
		t.Fatal("cancelled LoadCSV returned no error")
	}
	if n := len(mustPeople(t, admin)); n != 450 {
		t.Fatalf("%d users after the cancelled load, want 450", n)
	}
	opts.OnBatch = nil
	res, err := seed.LoadCSV(context.Background(), db, path, opts, &bytes.Buffer{})
	if err != nil || res.Existing != 450 || res.Loaded != 550 || len(res.Skipped) != 11 {
		t.Fatalf("resumed LoadCSV: %+v, %v", res, err)
	}
	var distinct int
	if err := admin.QueryRow(context.Background(), `SELECT count(DISTINCT id) FROM users`).Scan(&distinct); err != nil || distinct != 1000 {
		t.Errorf("%d distinct users, want 1000 (%v)", distinct, err)
	}
}

func TestLoadCSVAcceptsAGoodLastLineWithoutNewline(t *testing.T) {
	db, admin := mustDB(t, "")
	path := writeFile(t, "Иванов Иван,1990-01-01,Москва\nПетрова Мария,1991-02-02,Тверь")
	res, err := seed.LoadCSV(context.Background(), db, path, seed.Options{}, &bytes.Buffer{})
	if err != nil || res.Loaded != 2 || len(res.Skipped) != 0 {
		t.Fatalf("LoadCSV: %+v, %v", res, err)
	}
	if n := len(mustPeople(t, admin)); n != 2 {
		t.Errorf("%d users, want 2", n)
	}
}

func TestLoadCSVErrors(t *testing.T) {
	db, admin := mustDB(t, "")
	ctx := context.Background()
	if _, err := seed.LoadCSV(ctx, db, filepath.Join(t.TempDir(), "missing.csv"), seed.Options{}, &bytes.Buffer{}); err == nil {
		t.Error("a missing file loaded")
	}
	var out bytes.Buffer
	res, err := seed.LoadCSV(ctx, db, writeFile(t, "только мусор\n"+strings.Repeat("x", 70<<10)+"\n"), seed.Options{}, &out)
	if err != nil || res.Loaded != 0 || len(res.Skipped) != 2 || !strings.Contains(res.Skipped[1].Reason, "longer than") {
		t.Errorf("a file of bad lines: %+v, %v", res, err)
	}
	if n := len(mustPeople(t, admin)); n != 0 {
		t.Errorf("%d users from bad files", n)
	}
}
