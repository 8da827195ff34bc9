package stack

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strings"
)

// PassfileDSNs returns dsns (postgres:// URLs) without their passwords,
// each pointing instead at the libpq password file at path (the "passfile"
// parameter, which psql and pgx both read), and adds their passwords to
// that file (0600). A DSN without a password is returned as it is. Entries
// already in the file for other servers are kept.
func PassfileDSNs(path string, dsns []string) ([]string, error) {
	entries, err := readPassfile(path)
	if err != nil {
		return nil, err
	}
	before := renderPassfile(entries)
	out := make([]string, 0, len(dsns))
	for _, dsn := range dsns {
		u, err := url.Parse(dsn)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("passfile: not a postgres:// URL: %q", redact(dsn))
		}
		pw, ok := u.User.Password()
		if !ok {
			out = append(out, dsn)
			continue
		}
		user := u.User.Username()
		entries[passKey{u.Hostname(), u.Port(), user}] = pw
		u.User = url.User(user)
		q := u.Query()
		q.Set("passfile", path)
		u.RawQuery = q.Encode()
		out = append(out, u.String())
	}
	if after := renderPassfile(entries); after != before {
		if err := WriteFile(path, []byte(after), 0o600); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// passKey is a password file line without its password; the database is
// always "*".
type passKey struct{ host, port, user string }

func readPassfile(path string) (map[passKey]string, error) {
	entries := map[passKey]string{}
	data, err := ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return entries, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := splitPassLine(line)
		if len(f) == 5 {
			entries[passKey{f[0], f[1], f[3]}] = f[4]
		}
	}
	return entries, nil
}

func renderPassfile(entries map[passKey]string) string {
	lines := make([]string, 0, len(entries))
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	for k, pw := range entries {
		lines = append(lines, strings.Join([]string{esc.Replace(k.host), esc.Replace(k.port), "*", esc.Replace(k.user), esc.Replace(pw)}, ":"))
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

// splitPassLine splits a password file line on unescaped colons.
func splitPassLine(line string) []string {
	var fields []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case line[i] == ':':
			fields = append(fields, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(fields, cur.String())
}

// redact hides a URL's password for error messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.Host != "" {
		return u.Redacted()
	}
	return "(not shown: it may hold a password)"
}
