package auth_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"socnet/internal/auth"
	"socnet/internal/social"
)

const userID = "0b5a6f4e-3c1d-4e8f-9a7b-2d6c8e0f1a3b"

func mustKey(b byte) []byte { return bytes.Repeat([]byte{b}, auth.KeyLen) }

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestTokensRoundTrip(t *testing.T) {
	c := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	tokens := auth.NewTokens(mustKey(1), time.Hour, c.now)
	tok, err := tokens.Issue(userID)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	got, err := tokens.Verify(tok)
	if err != nil || got != userID {
		t.Fatalf("Verify = %q, %v; want %q, nil", got, err, userID)
	}

	c.t = c.t.Add(59 * time.Minute)
	if _, err := tokens.Verify(tok); err != nil {
		t.Errorf("Verify before expiry: %v", err)
	}
	c.t = c.t.Add(2 * time.Minute)
	_, err = tokens.Verify(tok)
	if social.ErrorCode(err) != social.EUNAUTHORIZED || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Verify after expiry = %v; want an EUNAUTHORIZED 'token expired'", err)
	}
}

func TestTokensDefaults(t *testing.T) {
	tokens := auth.NewTokens(mustKey(1), 0, nil)
	tok, err := tokens.Issue(userID)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil {
		t.Fatalf("ParseUnverified: %v", err)
	}
	if ttl := claims.ExpiresAt.Sub(claims.IssuedAt.Time); ttl != auth.DefaultTokenTTL {
		t.Errorf("ttl = %v; want %v", ttl, auth.DefaultTokenTTL)
	}
	if d := time.Since(claims.IssuedAt.Time); d < -time.Second || d > time.Minute {
		t.Errorf("issued at %v, %v from now; want now", claims.IssuedAt, d)
	}
}

func TestTokensRefuse(t *testing.T) {
	now := time.Now()
	tokens := auth.NewTokens(mustKey(1), time.Hour, nil)
	good, err := tokens.Issue(userID)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, claims jwt.Claims) string {
		t.Helper()
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := func() jwt.RegisteredClaims {
		return jwt.RegisteredClaims{Issuer: "socnet", Subject: userID,
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	}
	otherKey, _ := auth.NewTokens(mustKey(2), time.Hour, nil).Issue(userID)
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(
		`{"iss":"socnet","sub":"11111111-1111-1111-1111-111111111111","iat":1,"exp":99999999999}`)) + "." + parts[2]

	tests := map[string]string{
		"empty":           "",
		"garbage":         "not.a.token",
		"other key":       otherKey,
		"tampered claims": tampered,
		"no signature":    parts[0] + "." + parts[1] + ".",
		"alg none": sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType,
			valid()),
		"HS512 same key": sign(jwt.SigningMethodHS512, mustKey(1), valid()),
		"wrong issuer": sign(jwt.SigningMethodHS256, mustKey(1), func() jwt.RegisteredClaims {
			c := valid()
			c.Issuer = "other"
			return c
		}()),
		"no expiry": sign(jwt.SigningMethodHS256, mustKey(1), func() jwt.RegisteredClaims {
			c := valid()
			c.ExpiresAt = nil
			return c
		}()),
		"issued in the future": sign(jwt.SigningMethodHS256, mustKey(1), func() jwt.RegisteredClaims {
			c := valid()
			c.IssuedAt = jwt.NewNumericDate(now.Add(10 * time.Minute))
			return c
		}()),
		"subject not a uuid": sign(jwt.SigningMethodHS256, mustKey(1), func() jwt.RegisteredClaims {
			c := valid()
			c.Subject = "admin"
			return c
		}()),
		"no subject": sign(jwt.SigningMethodHS256, mustKey(1), func() jwt.RegisteredClaims {
			c := valid()
			c.Subject = ""
			return c
		}()),
	}
	if _, err := tokens.Verify(sign(jwt.SigningMethodHS256, mustKey(1), valid())); err != nil {
		t.Fatalf("Verify(hand-made valid token) = %v; the cases below would prove nothing", err)
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			id, err := tokens.Verify(tok)
			if social.ErrorCode(err) != social.EUNAUTHORIZED || id != "" {
				t.Errorf("Verify = %q, %v; want \"\", code %s", id, err, social.EUNAUTHORIZED)
			}
		})
	}
}

func TestNewTokensPanicsOnShortKey(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewTokens(16-byte key) did not panic")
		}
	}()
	auth.NewTokens(make([]byte, 16), time.Hour, nil)
}
