package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func pemOf(t testing.TB, pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func valid(user string) jwt.MapClaims {
	return jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()}
}

func TestNoKeysMeansDevelopmentMode(t *testing.T) {
	a, err := NewAuthenticator(AuthConfig{})
	if a != nil || err != nil {
		t.Fatalf("got %v, %v", a, err)
	}
}

func TestVerifyHMAC(t *testing.T) {
	secret := []byte("s3cret")
	a, err := NewAuthenticator(AuthConfig{HMACSecret: secret, Issuer: "game", Audience: "lobby", Leeway: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	good := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "iss": "game", "aud": "lobby",
		"channels": []string{"chat:*"}, "publish": []string{"chat:room1"}, "info": map[string]any{"name": "Alice"}}
	id, err := a.Verify(sign(t, jwt.SigningMethodHS384, secret, good, ""))
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "alice" || len(id.Subscribe) != 1 || id.Publish[0] != "chat:room1" || string(id.Info) != `{"name":"Alice"}` {
		t.Fatalf("identity %+v", id)
	}

	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for key, val := range good {
			c[key] = val
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	cases := map[string]struct {
		token string
		want  error
	}{
		"expired":           {sign(t, jwt.SigningMethodHS256, secret, with("exp", time.Now().Add(-time.Minute).Unix()), ""), ErrTokenExpired},
		"no exp":            {sign(t, jwt.SigningMethodHS256, secret, with("exp", nil), ""), ErrTokenInvalid},
		"not yet valid":     {sign(t, jwt.SigningMethodHS256, secret, with("nbf", time.Now().Add(time.Minute).Unix()), ""), ErrTokenInvalid},
		"wrong issuer":      {sign(t, jwt.SigningMethodHS256, secret, with("iss", "other"), ""), ErrTokenInvalid},
		"wrong audience":    {sign(t, jwt.SigningMethodHS256, secret, with("aud", "other"), ""), ErrTokenInvalid},
		"wrong secret":      {sign(t, jwt.SigningMethodHS256, []byte("guess"), good, ""), ErrTokenInvalid},
		"no sub":            {sign(t, jwt.SigningMethodHS256, secret, with("sub", nil), ""), ErrTokenInvalid},
		"channels not list": {sign(t, jwt.SigningMethodHS256, secret, with("channels", "chat:*"), ""), ErrTokenInvalid},
		"alg none":          {sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good, ""), ErrTokenInvalid},
		"garbage":           {"not.a.token", ErrTokenInvalid},
		"empty":             {"", ErrTokenInvalid},
	}
	for name, tc := range cases {
		if _, err := a.Verify(tc.token); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	// Within the leeway an expired token still passes.
	if _, err := a.Verify(sign(t, jwt.SigningMethodHS256, secret, with("exp", time.Now().Add(-500*time.Millisecond).Unix()+1), "")); err != nil {
		t.Errorf("leeway: %v", err)
	}
}

func TestVerifyPublicKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	a, err := NewAuthenticator(AuthConfig{PublicKeyPEMs: [][]byte{pemOf(t, &rsaKey.PublicKey), pemOf(t, &ecKey.PublicKey), pemOf(t, edPub)}})
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"RS256": sign(t, jwt.SigningMethodRS256, rsaKey, valid("r"), ""),
		"ES256": sign(t, jwt.SigningMethodES256, ecKey, valid("e"), ""),
		"EdDSA": sign(t, jwt.SigningMethodEdDSA, edKey, valid("d"), ""),
	} {
		if _, err := a.Verify(tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Algorithm confusion: an HS256 token "signed" with the RSA public key
	// must not pass when no HMAC secret is configured.
	forged := sign(t, jwt.SigningMethodHS256, pemOf(t, &rsaKey.PublicKey), valid("mallory"), "")
	if _, err := a.Verify(forged); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("HS256 token against an RSA key: %v", err)
	}
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := a.Verify(sign(t, jwt.SigningMethodRS256, otherRSA, valid("x"), "")); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("token of an unknown key: %v", err)
	}
}

func TestVerifyJWKSByKid(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	b64 := base64.RawURLEncoding.EncodeToString
	ecBytes, _ := ecKey.PublicKey.Bytes()
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "use": "sig", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(ecBytes[1:33]), "y": b64(ecBytes[33:])},
		{"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": b64(edPub)},
	}})
	a, err := NewAuthenticator(AuthConfig{JWKS: jwks})
	if err != nil {
		t.Fatal(err)
	}
	for kid, tok := range map[string]string{
		"r1": sign(t, jwt.SigningMethodRS256, rsaKey, valid("r"), "r1"),
		"e1": sign(t, jwt.SigningMethodES256, ecKey, valid("e"), "e1"),
		"d1": sign(t, jwt.SigningMethodEdDSA, edKey, valid("d"), "d1"),
	} {
		if _, err := a.Verify(tok); err != nil {
			t.Errorf("kid %s: %v", kid, err)
		}
	}
	if _, err := a.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, valid("r"), "e1")); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("RSA token naming the EC kid: %v", err)
	}
	if _, err := a.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, valid("r"), "unknown")); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("unknown kid: %v", err)
	}
	for _, bad := range []string{`{}`, `{"keys":[{"kty":"RSA"}]}`, `{"keys":[{"kty":"EC","kid":"x","crv":"P-1"}]}`, `nope`} {
		if _, err := NewAuthenticator(AuthConfig{JWKS: []byte(bad)}); err == nil {
			t.Errorf("JWKS %s accepted", bad)
		}
	}
}

func TestPatterns(t *testing.T) {
	p := ParsePatterns("chat:*, lobby:42, !chat:admin")
	for channel, want := range map[string]bool{"chat:x": true, "lobby:42": true, "lobby:43": false, "chat:admin": false, "chatter": false} {
		if p.Allows(channel) != want {
			t.Errorf("%q: %v", channel, !want)
		}
	}
	perms := Permissions{Subscribe: ParsePatterns("*"), Publish: ParsePatterns("*"), DenyPublish: ParsePatterns("presence:*")}
	if !perms.CanSubscribe("presence:room") || perms.CanPublish("presence:room") || !perms.CanPublish("chat:1") {
		t.Error("presence:* should be read-only")
	}
	perms = Permissions{Send: ParsePatterns("*"), DenySend: ParsePatterns("bot:*")}
	if !perms.CanSend("alice") || perms.CanSend("bot:1") || (&Permissions{}).CanSend("alice") {
		t.Fatal("send permissions: the default allows, a deny wins, no patterns allow nothing")
	}
	if (Patterns{}).Allows("x") {
		t.Error("an empty list allows nothing")
	}
}

// FuzzVerify: no token crashes the verifier or passes without the secret.
func FuzzVerify(f *testing.F) {
	secret := []byte("fuzz-secret")
	a, _ := NewAuthenticator(AuthConfig{HMACSecret: secret})
	f.Add(sign(f, jwt.SigningMethodHS256, secret, valid("alice"), ""))
	f.Add(sign(f, jwt.SigningMethodHS256, []byte("other"), valid("alice"), ""))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		id, err := a.Verify(token)
		if err == nil {
			// Accepted: it must verify under the real secret.
			if _, perr := jwt.Parse(token, func(*jwt.Token) (any, error) { return secret, nil }, jwt.WithValidMethods([]string{"HS256", "HS384", "HS512"})); perr != nil || id.User == "" {
				t.Fatalf("accepted %q: %v", token, perr)
			}
		}
	})
}
