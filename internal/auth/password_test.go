package auth_test

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"socnet/internal/auth"
	"socnet/internal/social"
)

func TestHasher(t *testing.T) {
	h := auth.Hasher{Cost: bcrypt.MinCost}
	hash, err := h.Hash("correct horse")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if cost, err := bcrypt.Cost(hash); err != nil || cost != bcrypt.MinCost {
		t.Errorf("bcrypt.Cost = %d, %v; want %d", cost, err, bcrypt.MinCost)
	}
	if err := h.Compare(hash, "correct horse"); err != nil {
		t.Errorf("Compare(right password) = %v; want nil", err)
	}
	for _, wrong := range []string{"", "correct hors", "correct horse ", strings.Repeat("x", 100)} {
		if err := h.Compare(hash, wrong); social.ErrorCode(err) != social.EUNAUTHORIZED {
			t.Errorf("Compare(%q) = %v; want code %s", wrong, err, social.EUNAUTHORIZED)
		}
	}
	if err := h.Compare([]byte("not a bcrypt hash"), "x"); social.ErrorCode(err) != social.EINTERNAL {
		t.Errorf("Compare(bad hash) = %v; want code %s", err, social.EINTERNAL)
	}
}

func TestHasherDefaultCost(t *testing.T) {
	hash, err := auth.Hasher{}.Hash("secret")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if cost, _ := bcrypt.Cost(hash); cost != auth.DefaultCost || auth.DefaultCost != 10 {
		t.Errorf("cost = %d, DefaultCost = %d; want 10", cost, auth.DefaultCost)
	}
}

func TestHasherRefusesLongPassword(t *testing.T) {
	h := auth.Hasher{Cost: bcrypt.MinCost}
	if _, err := h.Hash(strings.Repeat("a", social.MaxPasswordLen)); err != nil {
		t.Errorf("Hash(%d bytes) = %v; want nil", social.MaxPasswordLen, err)
	}
	// 37 two-byte runes: 74 bytes, within a rune limit but past bcrypt's.
	_, err := h.Hash(strings.Repeat("ж", 37))
	if social.ErrorCode(err) != social.EINVALID {
		t.Errorf("Hash(74 bytes) = %v; want code %s", err, social.EINVALID)
	}
}
