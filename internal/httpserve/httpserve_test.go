package httpserve_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"socnet/internal/httpserve"
	"socnet/internal/social"
)

// TestListenAndServeShutsDownGracefully checks that a request in flight
// when the context ends is answered in full, and that the server then
// returns nil.
func TestListenAndServeShutsDownGracefully(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		fmt.Fprint(w, "done")
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bound := make(chan string, 1)
	served := make(chan error, 1)
	go func() {
		served <- httpserve.ListenAndServe(ctx, nil, httpserve.Server{Name: "test", Addr: "127.0.0.1:0", Handler: mux,
			Grace: time.Minute, Listening: func(addr string) error { bound <- addr; return nil }})
	}()
	addr := <-bound
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			answer <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	<-entered
	cancel() // shutdown starts with the request in flight
	select {
	case err := <-served:
		t.Fatalf("server returned with a request in flight: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if got := <-answer; got != "done" {
		t.Errorf("in-flight request got %q, want done", got)
	}
	if err := <-served; err != nil {
		t.Errorf("ListenAndServe after shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Errorf("%s still accepts after shutdown", addr)
	}
}

func TestListenAndServeRefusesABusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = httpserve.ListenAndServe(context.Background(), nil, httpserve.Server{Name: "api", Addr: ln.Addr().String(), Handler: http.NotFoundHandler()})
	if err == nil || !strings.HasPrefix(err.Error(), "api: listen:") {
		t.Errorf("ListenAndServe on a taken address: %v, want an error naming the server", err)
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{&social.Error{Code: social.EINVALID, Message: "bad"}, http.StatusBadRequest},
		{&social.Error{Code: social.EUNAUTHORIZED}, http.StatusUnauthorized},
		{&social.Error{Code: social.EFORBIDDEN}, http.StatusForbidden},
		{&social.Error{Code: social.ENOTFOUND}, http.StatusNotFound},
		{&social.Error{Code: social.ECONFLICT}, http.StatusConflict},
		{&social.Error{Code: social.ETOOLARGE}, http.StatusRequestEntityTooLarge},
		{&social.Error{Code: social.ETOOMANY}, http.StatusTooManyRequests},
		{&social.Error{Code: social.EUNAVAILABLE}, http.StatusServiceUnavailable},
		{&social.Error{Code: "no-such-code"}, http.StatusInternalServerError},
		{errors.New("a bug"), http.StatusInternalServerError},
		{fmt.Errorf("query: %w", context.Canceled), http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		if got := httpserve.Status(httpserve.ErrorCode(tt.err)); got != tt.want {
			t.Errorf("%v: status %d, want %d", tt.err, got, tt.want)
		}
	}
}
