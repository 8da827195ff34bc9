package auth

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"

	"socnet/internal/social"
)

// DefaultCost is the bcrypt cost of Hasher's zero value.
const DefaultCost = bcrypt.DefaultCost

// Hasher hashes and checks passwords with bcrypt. The zero value uses
// DefaultCost; tests set bcrypt.MinCost to stay fast.
type Hasher struct {
	// Cost is the bcrypt cost of new hashes; 0 means DefaultCost.
	Cost int
}

// Hash returns the bcrypt hash of password. A password longer than
// social.MaxPasswordLen bytes returns EINVALID: bcrypt would ignore the rest.
func (h Hasher) Hash(password string) ([]byte, error) {
	if len(password) > social.MaxPasswordLen {
		return nil, social.Invalid(map[string]string{
			"password": fmt.Sprintf("must be at most %d bytes", social.MaxPasswordLen)})
	}
	cost := h.Cost
	if cost == 0 {
		cost = DefaultCost
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return hash, nil
}

// Compare checks password against a hash made by Hash. A wrong password
// returns EUNAUTHORIZED; a hash that is not bcrypt's returns an internal error.
func (h Hasher) Compare(hash []byte, password string) error {
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword), errors.Is(err, bcrypt.ErrPasswordTooLong):
		return social.Errorf(social.EUNAUTHORIZED, "wrong password")
	default:
		return fmt.Errorf("compare password hash: %w", err)
	}
}
