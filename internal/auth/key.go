package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreateKey returns the token signing key kept in the file at path,
// first creating the file with KeyLen random bytes and mode 0600 if it does
// not exist. It refuses a key file that others can read or write, that is not
// a regular file, or that does not hold exactly KeyLen bytes. The directory
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
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open token key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat token key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("token key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("token key %s has mode %#o; want 0600 or stricter", path, perm)
	}
	key, err := io.ReadAll(io.LimitReader(f, KeyLen+1))
	if err != nil {
		return nil, fmt.Errorf("read token key: %w", err)
	}
	if len(key) != KeyLen {
		return nil, fmt.Errorf("token key %s holds %d bytes; want %d", path, fi.Size(), KeyLen)
	}
	return key, nil
}

// createKey writes a new key to a temporary file and links it into place, so
// that path never holds a partial key and a concurrent creator's key wins
// cleanly.
func createKey(path string) (err error) {
	key := make([]byte, KeyLen)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate token key: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".token-key-*")
	if err != nil {
		return fmt.Errorf("create token key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("create token key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return fmt.Errorf("write token key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write token key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write token key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create token key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // make the new name durable; a failure only risks a new key after a crash
		d.Close()
	}
	return nil
}
