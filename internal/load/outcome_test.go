package load_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"socnet/internal/load"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "timeout awaiting response headers" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	tests := []struct {
		name   string
		status int
		err    error
		want   load.ErrorKind
	}{
		{"200", 200, nil, load.KindNone},
		{"204", 204, nil, load.KindNone},
		{"301", 301, nil, load.KindStatus},
		{"404", 404, nil, load.KindStatus},
		{"503", 503, nil, load.KindStatus},
		{"refused", 0, opErr(syscall.ECONNREFUSED), load.KindRefused},
		{"reset", 0, opErr(syscall.ECONNRESET), load.KindReset},
		{"broken pipe", 0, opErr(syscall.EPIPE), load.KindReset},
		{"closed by the server", 0, fmt.Errorf("read: %w", io.EOF), load.KindReset},
		{"truncated body", 200, io.ErrUnexpectedEOF, load.KindReset},
		{"header timeout", 0, timeoutErr{}, load.KindTimeout},
		{"deadline", 0, fmt.Errorf("dial: %w", context.DeadlineExceeded), load.KindTimeout},
		{"dial timeout", 0, &net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded}, load.KindTimeout},
		{"other", 0, errors.New("malformed HTTP response"), load.KindOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := load.Classify(tt.status, tt.err); got != tt.want {
				t.Errorf("Classify(%d, %v) = %v, want %v", tt.status, tt.err, got, tt.want)
			}
		})
	}
}
