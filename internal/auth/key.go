package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// LoadOrCreateKey returns the key kept in the file at path (the token signing
// key, the services' key), first creating the file with KeyLen random bytes
// and mode 0600 if it does not exist. It refuses a key file that another user
// owns, that others can read or write, that is a symbolic link or not a
// regular file, or that does not hold exactly KeyLen bytes. The directory
// must exist.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createKey(path); err != nil {
		return nil, err
	}
	return readKey(path)
}

func readKey(path string) ([]byte, error) {
	// O_NOFOLLOW: a key planted as a link to a file of the attacker's is
	// refused, not read.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("key %s is a symbolic link; want a regular file", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key %s is not a regular file", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("key %s is owned by uid %d, not by uid %d who runs socnet; remove it or run chown %d %s",
			path, st.Uid, os.Geteuid(), os.Geteuid(), path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key %s has mode %#o; want 0600 or stricter", path, perm)
	}
	key, err := io.ReadAll(io.LimitReader(f, KeyLen+1))
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if len(key) != KeyLen {
		return nil, fmt.Errorf("key %s holds %d bytes; want %d", path, fi.Size(), KeyLen)
	}
	return key, nil
}

// createKey writes a new key to a temporary file and links it into place, so
// that path never holds a partial key and a concurrent creator's key wins
// cleanly.
func createKey(path string) (err error) {
	key := make([]byte, KeyLen)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("create key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("create key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // make the new name durable; a failure only risks a new key after a crash
		d.Close()
	}
	return nil
}
