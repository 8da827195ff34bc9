package stack_test

import (
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"socnet/internal/stack"
)

// TestStopLeftovers runs processes recorded in services.json as a previous
// `up` that died would leave them: the one marked as a child of this home is
// stopped, the ones marked for another home or not at all (a pid reused by
// an unrelated process) are left alone.
func TestStopLeftovers(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	start := func(env ...string) (*exec.Cmd, chan error) {
		cmd := exec.Command("sleep", "300")
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd, done
	}
	ours, oursDone := start(stack.HomeEnv + "=" + home)
	other, otherDone := start(stack.HomeEnv + "=" + filepath.Join(dir, "other"))
	unmarked, unmarkedDone := start()
	recs := []stack.Service{{Name: "relay", Pid: ours.Process.Pid}, {Name: "api", Pid: other.Process.Pid},
		{Name: "counter", Pid: unmarked.Process.Pid}}
	data, _ := json.Marshal(recs)
	if err := os.WriteFile(stack.Home{Dir: home}.Services(), data, 0o600); err != nil {
		t.Fatal(err)
	}

	stack.StopLeftovers(stack.Home{Dir: home}, slog.New(slog.DiscardHandler), 10*time.Second)
	select {
	case <-oursDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("the leftover of this home (pid %d) still runs", ours.Process.Pid)
	}
	for name, done := range map[string]chan error{"another home's": otherDone, "an unmarked": unmarkedDone} {
		select {
		case err := <-done:
			t.Errorf("%s process was stopped: %v", name, err)
		default:
		}
	}
}
