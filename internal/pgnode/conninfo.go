package pgnode

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// ReplicationConnInfo returns a libpq key/value connection string of the form
// `host=H port=P user=U password=W application_name=A`, quoting values as
// libpq requires. It is the form BaseBackup and Follow expect.
func ReplicationConnInfo(host string, port int, user, password, applicationName string) string {
	kvs := []connParam{
		{"host", host},
		{"port", strconv.Itoa(port)},
		{"user", user},
		{"password", password},
		{"application_name", applicationName},
	}
	var b strings.Builder
	for _, kv := range kvs {
		if kv.value == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv.key + "=" + quoteConnValue(kv.value))
	}
	return b.String()
}

// connParam is one key=value pair of a libpq connection string.
type connParam struct{ key, value string }

// quoteConnValue quotes v for a key/value connection string.
func quoteConnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\\'") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// parseConnInfo splits a libpq key/value connection string.
func parseConnInfo(s string) ([]connParam, error) {
	var params []connParam
	i := 0
	skipSpace := func() {
		for i < len(s) && strings.IndexByte(" \t\n\r\f\v", s[i]) >= 0 {
			i++
		}
	}
	for {
		skipSpace()
		if i >= len(s) {
			return params, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && strings.IndexByte(" \t\n\r\f\v", s[i]) < 0 {
			i++
		}
		key := s[start:i]
		skipSpace()
		if i >= len(s) || s[i] != '=' || key == "" {
			return nil, fmt.Errorf("connection string: missing \"=\" after %q", key)
		}
		i++
		skipSpace()
		var v strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					v.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return nil, errors.New("connection string: unterminated quoted value of " + key)
			}
		} else {
			for i < len(s) && strings.IndexByte(" \t\n\r\f\v", s[i]) < 0 {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					c = s[i]
					i++
				}
				v.WriteByte(c)
			}
		}
		params = append(params, connParam{key, v.String()})
	}
}

// splitPassword returns connInfo without its password, and the password, so
// that the password reaches a program through its environment and not its
// command line (which every local user can read). URLs and key/value strings
// are both accepted.
func splitPassword(connInfo string) (rest, password string, err error) {
	if strings.HasPrefix(connInfo, "postgres://") || strings.HasPrefix(connInfo, "postgresql://") {
		u, err := url.Parse(connInfo)
		if err != nil {
			return "", "", errors.New("connection string: malformed URL")
		}
		if u.User != nil {
			password, _ = u.User.Password()
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		if p := q.Get("password"); p != "" {
			password = p
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		return u.String(), password, nil
	}
	params, err := parseConnInfo(connInfo)
	if err != nil {
		return "", "", err
	}
	var kept []string
	for _, p := range params {
		if p.key == "password" {
			password = p.value
			continue
		}
		kept = append(kept, p.key+"="+quoteConnValue(p.value))
	}
	return strings.Join(kept, " "), password, nil
}
