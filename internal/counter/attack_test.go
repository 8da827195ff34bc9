package counter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"socnet/internal/counter"
	"socnet/internal/social"
)

// forgedBatch is the attack of a local user on counterd: another user's
// unread count set to 31337 with a seq no later event can beat.
func forgedBatch(t *testing.T, user, peer string) []byte {
	t.Helper()
	b, err := json.Marshal(counter.Batch{Events: []counter.Event{{
		ID: newUUID(t), Kind: counter.KindUnreadReset, UserID: user, PeerID: peer, Seq: 1 << 62, Unread: 31337,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post sends body to counterd's POST /events with the given headers and
// returns the status and the answer.
func post(t *testing.T, base string, header http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/events", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer)
}

// TestForgedAndReplayedEventsChangeNothing attacks a running counterd (a
// real process, signed requests required) the way a local user or a
// network peer would: unsigned, as user nobody, who cannot read the key;
// signed but out of bounds; and a captured request replayed. Every attempt
// is refused with a 4xx and leaves the counters and the inbox as they were;
// real messages and reads go on updating them.
func TestForgedAndReplayedEventsChangeNothing(t *testing.T) {
	s := mustStack(t, stackOptions{})
	ctx := context.Background()
	ids := s.mustUsers(t, 2)
	sender, victim := ids[0], ids[1]
	base := "http://" + s.counterdAddr
	s.mustSend(t, sender, victim)
	s.mustSend(t, sender, victim)
	waitFor(t, 30*time.Second, "the counter at 2", func() error {
		if n := s.counters(t)[direction{victim, sender}]; n != 2 {
			return fmt.Errorf("counter %d", n)
		}
		return nil
	})
	unchanged := func(t *testing.T, what string, want map[direction]int, wantInbox int) {
		t.Helper()
		if diff := cmp.Diff(want, s.counters(t)); diff != "" {
			t.Errorf("%s changed the counters (-before +after):\n%s", what, diff)
		}
		if n := s.inboxLen(t); n != wantInbox {
			t.Errorf("%s changed the inbox: %d rows, want %d", what, n, wantInbox)
		}
	}
	before, inbox := s.counters(t), s.inboxLen(t)

	t.Run("unsigned", func(t *testing.T) {
		status, answer := post(t, base, http.Header{}, forgedBatch(t, victim, sender))
		if status != http.StatusUnauthorized || !strings.Contains(answer, `"code":"unauthorized"`) {
			t.Errorf("unsigned forged event: %d %s, want 401", status, answer)
		}
		unchanged(t, "an unsigned forged event", before, inbox)
	})

	t.Run("as nobody", func(t *testing.T) {
		nobody, err := user.Lookup("nobody")
		if err != nil || os.Getuid() != 0 {
			t.Skip("needs root and a user nobody to act as another local user")
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		gid, _ := strconv.Atoi(nobody.Gid)
		// The key as `up` keeps it: 0600, in a directory others may enter.
		dir, err := os.MkdirTemp("", "socnet-key-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(dir, "service.key")
		if err := os.WriteFile(keyFile, serviceKey, 0o600); err != nil {
			t.Fatal(err)
		}
		asNobody := func(name string, args ...string) (string, error) {
			cmd := exec.Command(name, args...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		if out, err := asNobody("cat", keyFile); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("nobody read the service key: %v %q", err, out)
		}
		out, err := asNobody("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
			"-H", "Content-Type: application/json", "--data-binary", string(forgedBatch(t, victim, sender)), base+"/events")
		if err != nil || out != "401" {
			t.Errorf("nobody's forged event: %q %v, want 401", out, err)
		}
		unchanged(t, "nobody's forged event", before, inbox)
	})

	t.Run("signed but out of bounds", func(t *testing.T) {
		var b counter.Batch
		if err := json.Unmarshal(forgedBatch(t, victim, sender), &b); err != nil {
			t.Fatal(err)
		}
		_, err := s.client.Apply(ctx, b)
		if social.ErrorCode(err) != social.EINVALID || !strings.Contains(err.Error(), "seq must be at most") {
			t.Errorf("signed forged event: %v, want EINVALID naming seq", err)
		}
		unchanged(t, "a signed event out of bounds", before, inbox)
	})

	t.Run("replayed", func(t *testing.T) {
		// A real read, applied as the API does, its request captured.
		r, err := s.dialogs.MarkRead(ctx, victim, sender)
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(counter.Batch{Events: []counter.Event{counter.EventFromReceipt(r)}, Session: victim})
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, base+"/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := counter.NewSigner(serviceKey, nil).Sign(req, body); err != nil {
			t.Fatal(err)
		}
		// The relay delivers the same event from the outbox: whichever
		// comes second is a duplicate, and either way the request is a real,
		// accepted one to replay.
		if status, answer := post(t, base, req.Header, body); status != http.StatusOK ||
			!(strings.Contains(answer, `"applied"`) || strings.Contains(answer, `"duplicate"`)) {
			t.Fatalf("the read: %d %s", status, answer)
		}
		s.mustSend(t, sender, victim) // one new unread message after the read
		waitFor(t, 30*time.Second, "the counter at 1", func() error {
			if n := s.counters(t)[direction{victim, sender}]; n != 1 || s.outboxLen(t) > 0 {
				return fmt.Errorf("counter %d, outbox %d", n, s.outboxLen(t))
			}
			return nil
		})
		after, inbox := s.counters(t), s.inboxLen(t)
		status, answer := post(t, base, req.Header, body)
		if status != http.StatusUnauthorized || !strings.Contains(answer, "replayed request") {
			t.Errorf("replayed read: %d %s, want 401 replayed", status, answer)
		}
		unchanged(t, "a replayed read", after, inbox)
		// Even signed afresh by a holder of the key, the same event is a
		// duplicate: idempotence does not rest on the replay cache.
		res, err := s.client.Apply(ctx, counter.Batch{Events: []counter.Event{counter.EventFromReceipt(r)}})
		if err != nil || res.Results[0].Outcome != counter.OutcomeDuplicate {
			t.Errorf("the read signed again: %+v %v, want a duplicate", res, err)
		}
		unchanged(t, "the read signed again", after, inbox)
	})

	// Real traffic still moves the counters.
	s.mustSend(t, sender, victim)
	s.mustConverge(t, 30*time.Second)
	if n := s.counters(t)[direction{victim, sender}]; n != 2 {
		t.Errorf("counter after the attacks and one more message: %d, want 2", n)
	}
}

// TestCounterdRoutesRequireSignature: every route but GET /healthz answers
// 401 without a signature, unknown routes included.
func TestCounterdRoutesRequireSignature(t *testing.T) {
	srv, _ := mustServer(t)
	for _, tc := range []struct{ method, path string }{
		{"POST", "/events"}, {"GET", "/counters/" + newUUID(t)}, {"GET", "/metrics"}, {"GET", "/nope"}, {"HEAD", "/healthz"},
	} {
		req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(`{"events":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("unsigned %s %s: %d (WWW-Authenticate %q), want 401 with a challenge", tc.method, tc.path,
				resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("unsigned GET /healthz: %d, want 200", resp.StatusCode)
	}
}
