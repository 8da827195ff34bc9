package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"socnet/internal/social"
)

// DefaultTokenTTL is how long a token lives when NewTokens gets no ttl.
const DefaultTokenTTL = 24 * time.Hour

// KeyLen is the length in bytes of a token signing key.
const KeyLen = 32

// issuer names socnet in the tokens it issues, so that a token minted by
// another system with the same key is still refused.
const issuer = "socnet"

// Tokens issues and verifies bearer tokens: JWTs signed with HMAC-SHA256
// whose subject is a user id, with issued-at and expiry claims.
type Tokens struct {
	key    []byte
	ttl    time.Duration
	now    func() time.Time
	parser *jwt.Parser
}

// NewTokens returns Tokens signing with key (at least KeyLen bytes; it panics
// on a shorter key, which is a configuration bug). A ttl of 0 means
// DefaultTokenTTL; a nil now means time.Now.
func NewTokens(key []byte, ttl time.Duration, now func() time.Time) *Tokens {
	if len(key) < KeyLen {
		panic(fmt.Sprintf("auth: token key has %d bytes; want at least %d", len(key), KeyLen))
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{
		key: append([]byte(nil), key...),
		ttl: ttl,
		now: now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithIssuer(issuer),
			jwt.WithTimeFunc(now),
		),
	}
}

// Issue returns a token for the user that expires after the ttl.
func (t *Tokens) Issue(userID string) (string, error) {
	now := t.now()
	claims := jwt.RegisteredClaims{
		Issuer:    issuer,
		Subject:   userID,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(t.ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// Verify checks the token's signature, issuer and lifetime and returns the
// user id it names. Any problem returns EUNAUTHORIZED.
func (t *Tokens) Verify(token string) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := t.parser.ParseWithClaims(token, &claims, t.keyFunc)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", social.Errorf(social.EUNAUTHORIZED, "token expired")
	case err != nil:
		return "", social.Errorf(social.EUNAUTHORIZED, "invalid token")
	}
	if len(claims.Subject) != 36 || uuid.Validate(claims.Subject) != nil {
		return "", social.Errorf(social.EUNAUTHORIZED, "invalid token")
	}
	return claims.Subject, nil
}

func (t *Tokens) keyFunc(*jwt.Token) (any, error) { return t.key, nil }
