package auth_test

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"socnet/internal/auth"
)

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.key")
	key, err := auth.LoadOrCreateKey(path)
	if err != nil {
		t.Fatalf("first LoadOrCreateKey: %v", err)
	}
	if len(key) != auth.KeyLen || bytes.Equal(key, make([]byte, auth.KeyLen)) {
		t.Errorf("key = %x; want %d random bytes", key, auth.KeyLen)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %#o; want 0600", fi.Mode().Perm())
	}
	again, err := auth.LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Errorf("second LoadOrCreateKey = %x, %v; want the first key %x", again, err, key)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries; want only the key file", len(entries))
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := auth.LoadOrCreateKey(path)
			if err != nil {
				t.Errorf("LoadOrCreateKey: %v", err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for i, k := range keys {
		if !bytes.Equal(k, keys[0]) {
			t.Errorf("caller %d got key %x; caller 0 got %x", i, k, keys[0])
		}
	}
}

func TestLoadOrCreateKeyRefuses(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		want    string
	}{
		{"group readable", func(t *testing.T, path string) { writeFile(t, path, 32, 0o640) }, "mode"},
		{"world readable", func(t *testing.T, path string) { writeFile(t, path, 32, 0o604) }, "mode"},
		{"short", func(t *testing.T, path string) { writeFile(t, path, 16, 0o600) }, "holds 16 bytes"},
		{"long", func(t *testing.T, path string) { writeFile(t, path, 64, 0o600) }, "holds 64 bytes"},
		{"empty", func(t *testing.T, path string) { writeFile(t, path, 0, 0o600) }, "holds 0 bytes"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
		{"symbolic link", func(t *testing.T, path string) {
			// A link to a well-formed key of someone else's.
			target := filepath.Join(t.TempDir(), "planted.key")
			writeFile(t, target, 32, 0o600)
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"owned by another user", func(t *testing.T, path string) {
			writeFile(t, path, 32, 0o600)
			chownNobody(t, path)
		}, "owned by uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token.key")
			tt.prepare(t, path)
			before := readRegular(path)
			key, err := auth.LoadOrCreateKey(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadOrCreateKey = %x, %v; want an error containing %q", key, err, tt.want)
			}
			if after := readRegular(path); !bytes.Equal(before, after) {
				t.Errorf("key file changed from %x to %x", before, after)
			}
		})
	}
}

func TestLoadOrCreateKeyMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "token.key")
	if _, err := auth.LoadOrCreateKey(path); err == nil {
		t.Error("LoadOrCreateKey in a missing directory succeeded")
	}
}

// readRegular reads path when it is a regular file (not a FIFO a read
// would block on, not the target of a link).
func readRegular(path string) []byte {
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	b, _ := os.ReadFile(path)
	return b
}

// chownNobody hands path to the user nobody, as a file planted by another
// local user would be.
func chownNobody(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("handing a file to another user needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("look up nobody: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, size int, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{7}, size), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is masked by umask
		t.Fatal(err)
	}
}
