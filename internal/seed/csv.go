package seed

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"socnet/internal/dbroute"
	"socnet/internal/social"
)

// maxCSVLine bounds one line of a people file; longer lines are reported
// as bad without being held in memory.
const maxCSVLine = 64 << 10

// maxReportedLines is how many bad lines LoadCSV prints; Result lists all.
const maxReportedLines = 20

// LoadCSV loads a people file: one person per line as
// «Фамилия Имя,YYYY-MM-DD,Город», no header, UTF-8, LF or CRLF line ends.
// Lines that do not parse (wrong field count, a name that is not two words,
// a bad or impossible date, an empty or too long field, bad UTF-8, a last
// line cut short) are reported with their number and reason, listed in
// Result.Skipped and not loaded; quoted fields are not supported. Everyone
// gets the password Password and an empty biography.
//
// The load is resumable and exactly-once like Run: it is keyed by the
// SHA-256 of the file's content (the seed_runs row), and a person's id is
// derived from that key and the line number, so loading the same file again
// continues an interrupted load or reports it already done. opts.Users and
// opts.Seed are not used.
func LoadCSV(ctx context.Context, db *dbroute.DB, path string, opts Options, progress io.Writer) (Result, error) {
	start := time.Now()
	now := start.UTC()
	sum, good, bad, err := scanCSV(path, now)
	if err != nil {
		return Result{}, fmt.Errorf("load %s: %w", path, err)
	}
	for i, b := range bad {
		if i == maxReportedLines {
			fmt.Fprintf(progress, "... and %d more bad lines\n", len(bad)-i)
			break
		}
		fmt.Fprintf(progress, "line %d: %s\n", b.Line, b.Reason)
	}
	if len(bad) > 0 {
		fmt.Fprintf(progress, "skipping %d bad lines of %d\n", len(bad), len(bad)+good)
	}
	if good == 0 {
		fmt.Fprintln(progress, "no loadable lines")
		return Result{Skipped: bad, Elapsed: time.Since(start)}, nil
	}

	key := int64(binary.BigEndian.Uint64(sum[:8]))
	f, err := os.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	lines := newLineReader(f)
	next := 0 // index among good lines of the next row fill returns
	l := &loader{db: db, key: key, source: "csv sha256:" + hex.EncodeToString(sum[:]), opts: opts,
		progress: progress, start: start,
		fill: func(first, n int, rows []social.User) ([]social.User, error) {
			for len(rows) < n {
				ln, err := lines.next()
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = errors.New("file changed while loading")
					}
					return rows, err
				}
				u, reason := parsePerson(ln, now)
				if reason != "" {
					continue
				}
				if next < first { // loaded by an earlier run
					next++
					continue
				}
				u.ID = UserID(key, ln.num-1)
				rows = append(rows, u)
				next++
			}
			return rows, nil
		}}
	res, err := l.load(ctx, good)
	res.Skipped = bad
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("load %s: %w", path, err)
	}
	return res, nil
}

// scanCSV reads the file once: its SHA-256, the number of good lines and
// the bad ones.
func scanCSV(path string, now time.Time) (sum [32]byte, good int, bad []BadLine, err error) {
	f, err := os.Open(path)
	if err != nil {
		return sum, 0, nil, err
	}
	defer f.Close()
	h := sha256.New()
	lines := newLineReader(io.TeeReader(f, h))
	for {
		ln, err := lines.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sum, 0, nil, err
		}
		if _, reason := parsePerson(ln, now); reason != "" {
			bad = append(bad, BadLine{Line: ln.num, Reason: reason})
			continue
		}
		good++
	}
	copy(sum[:], h.Sum(nil))
	return sum, good, bad, nil
}

// csvLine is one line of a file without its line end.
type csvLine struct {
	num        int // 1-based
	text       []byte
	terminated bool // ended with \n (false for a last line cut short)
	tooLong    bool // longer than maxCSVLine; text is empty
}

type lineReader struct {
	r *bufio.Reader
	n int
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, maxCSVLine)}
}

// next returns the next line (valid until the following call), or io.EOF.
func (lr *lineReader) next() (csvLine, error) {
	buf, err := lr.r.ReadSlice('\n')
	var l csvLine
	if errors.Is(err, bufio.ErrBufferFull) {
		l.tooLong, buf = true, nil
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = lr.r.ReadSlice('\n')
		}
	}
	switch {
	case errors.Is(err, io.EOF) && len(buf) == 0 && !l.tooLong:
		return l, io.EOF
	case err != nil && !errors.Is(err, io.EOF):
		return l, err
	}
	lr.n++
	l.num = lr.n
	l.terminated = err == nil
	buf = bytes.TrimSuffix(buf, []byte("\n"))
	l.text = bytes.TrimSuffix(buf, []byte("\r"))
	if l.num == 1 {
		l.text = bytes.TrimPrefix(l.text, []byte("\uFEFF")) // a byte order mark
	}
	return l, nil
}

// parsePerson parses «Фамилия Имя,YYYY-MM-DD,Город», returning the person
// or why the line is bad.
func parsePerson(l csvLine, now time.Time) (social.User, string) {
	u, reason := parseFields(l, now)
	if reason != "" && !l.terminated {
		reason = "last line is incomplete (file cut short?): " + reason
	}
	return u, reason
}

func parseFields(l csvLine, now time.Time) (social.User, string) {
	switch {
	case l.tooLong:
		return social.User{}, fmt.Sprintf("longer than %d bytes", maxCSVLine)
	case len(bytes.TrimSpace(l.text)) == 0:
		return social.User{}, "empty line"
	case !utf8.Valid(l.text):
		return social.User{}, "not valid UTF-8"
	case bytes.ContainsFunc(l.text, unicode.IsControl):
		return social.User{}, "contains control characters"
	}
	fields := strings.Split(string(l.text), ",")
	if len(fields) != 3 {
		return social.User{}, fmt.Sprintf("want 3 comma-separated fields «Фамилия Имя,YYYY-MM-DD,Город», got %d", len(fields))
	}
	name := strings.Fields(fields[0])
	if len(name) != 2 {
		return social.User{}, fmt.Sprintf("name %q: want «Фамилия Имя»", strings.TrimSpace(fields[0]))
	}
	for _, n := range name {
		if utf8.RuneCountInString(n) > social.MaxNameLen {
			return social.User{}, fmt.Sprintf("name: longer than %d characters", social.MaxNameLen)
		}
	}
	date := strings.TrimSpace(fields[1])
	birthdate, err := time.Parse(social.DateLayout, date)
	if err != nil {
		return social.User{}, fmt.Sprintf("birthdate %q: not a YYYY-MM-DD date", date)
	}
	if birthdate.Format(social.DateLayout) < social.MinBirthdate || birthdate.After(now) {
		return social.User{}, fmt.Sprintf("birthdate %s: not between %s and today", date, social.MinBirthdate)
	}
	city := strings.TrimSpace(fields[2])
	switch {
	case city == "":
		return social.User{}, "city: empty"
	case utf8.RuneCountInString(city) > social.MaxCityLen:
		return social.User{}, fmt.Sprintf("city: longer than %d characters", social.MaxCityLen)
	}
	return social.User{SecondName: name[0], FirstName: name[1], Birthdate: birthdate, City: city}, ""
}
