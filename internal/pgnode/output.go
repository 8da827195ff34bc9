package pgnode

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// tailLines is how many lines of output an error quotes.
const tailLines = 20

// lineWriter splits the output of a PostgreSQL program into lines and sends
// each to the log file, to the optional Output writer prefixed with the node
// name, and to a tail kept for error messages. Writing never fails: a broken
// log must not stop the database.
type lineWriter struct {
	mu      sync.Mutex
	prefix  string
	file    *os.File
	out     io.Writer
	partial []byte
	tail    []string
}

// openLineWriter appends to logPath (created, owned by acct, when missing;
// no file when logPath is empty) and copies lines to out when it is set.
func openLineWriter(name, logPath string, out io.Writer, acct *Account) (*lineWriter, error) {
	w := &lineWriter{prefix: name + " | ", out: out}
	if logPath == "" {
		return w, nil
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	if err := chownFile(logPath, acct); err != nil {
		f.Close()
		return nil, err
	}
	w.file = f
	return w, nil
}

// Write implements io.Writer.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

// emit sends one line, passwords redacted; the caller holds w.mu.
func (w *lineWriter) emit(line string) {
	line = Redact(line)
	if w.file != nil {
		_, _ = w.file.WriteString(line + "\n")
	}
	if w.out != nil {
		_, _ = io.WriteString(w.out, w.prefix+line+"\n")
	}
	w.tail = append(w.tail, line)
	if len(w.tail) > tailLines {
		w.tail = w.tail[len(w.tail)-tailLines:]
	}
}

// Close flushes an unterminated last line and closes the log file.
func (w *lineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit(string(w.partial))
		w.partial = nil
	}
	if w.file == nil {
		return nil
	}
	err := w.file.Close()
	w.file = nil
	return err
}

// Tail returns the last lines written, oldest first.
func (w *lineWriter) Tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.tail...)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// quoteTail formats output lines for the end of an error message, with
// passwords redacted; it is empty when there are no lines.
func quoteTail(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return "\n\t" + Redact(strings.Join(lines, "\n\t"))
}

var (
	passwordKV  = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)`)
	passwordURL = regexp.MustCompile(`(://[^:/@\s]*:)[^@\s]*@`)
)

// Redact hides the passwords of conninfo strings and URLs quoted in s (an
// error's or a child's output), for text that leaves the process.
func Redact(s string) string {
	s = passwordKV.ReplaceAllString(s, "${1}REDACTED")
	return passwordURL.ReplaceAllString(s, "${1}REDACTED@")
}
