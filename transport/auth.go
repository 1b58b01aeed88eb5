package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The error texts a client sees when authentication fails; documented.
const (
	AuthNoToken = "No authentication token provided"
	AuthTimeout = "Authentication timeout"
	AuthExpired = "Token expired"
	AuthInvalid = "Invalid token"
	// A refresh must name the connection's user: identity is for life.
	AuthOtherUser = "Token is for another user"
)

// AuthConfig names the keys tokens may be signed with and the claims checked.
type AuthConfig struct {
	HMACSecret    []byte
	PublicKeyPEMs [][]byte // RSA, ECDSA or Ed25519 public keys
	JWKS          []byte   // a JSON Web Key Set; keys chosen by kid
	Issuer        string
	Audience      string
	Leeway        time.Duration
	UserClaim     string // default "sub"
}

// Identity is what a verified token says about its bearer.
type Identity struct {
	User      string
	Expires   time.Time // zero: never
	Subscribe []string  // channel patterns from the `channels` claim; nil: the default
	Publish   []string  // from the `publish` claim; nil: the default
	Send      []string  // user id patterns from the `send` claim; nil: the default
	Info      json.RawMessage
}

// Authenticator verifies JWTs against the configured keys only.
type Authenticator struct {
	cfg     AuthConfig
	hmac    []byte
	keys    []crypto.PublicKey          // keys without kid, tried in turn
	byKID   map[string]crypto.PublicKey // JWKS keys
	methods []string
	parser  *jwt.Parser
}

// NewAuthenticator returns nil, nil when no key is configured: the broker
// then runs in open development mode.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	a := &Authenticator{cfg: cfg, hmac: cfg.HMACSecret, byKID: map[string]crypto.PublicKey{}}
	if a.cfg.UserClaim == "" {
		a.cfg.UserClaim = "sub"
	}
	for i, p := range cfg.PublicKeyPEMs {
		key, err := parsePublicKeyPEM(p)
		if err != nil {
			return nil, fmt.Errorf("public key %d: %w", i+1, err)
		}
		a.keys = append(a.keys, key)
	}
	if len(cfg.JWKS) > 0 {
		keys, err := parseJWKS(cfg.JWKS)
		if err != nil {
			return nil, fmt.Errorf("JWKS: %w", err)
		}
		a.byKID = keys
	}
	if len(a.hmac) == 0 && len(a.keys) == 0 && len(a.byKID) == 0 {
		return nil, nil
	}
	if len(a.hmac) > 0 {
		a.methods = append(a.methods, "HS256", "HS384", "HS512")
	}
	all := append([]crypto.PublicKey{}, a.keys...)
	for _, k := range a.byKID {
		all = append(all, k)
	}
	seen := map[string]bool{}
	for _, k := range all {
		for _, m := range methodsFor(k) {
			if !seen[m] {
				seen[m] = true
				a.methods = append(a.methods, m)
			}
		}
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(a.methods), jwt.WithLeeway(cfg.Leeway), jwt.WithExpirationRequired()}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

func methodsFor(k crypto.PublicKey) []string {
	switch k.(type) {
	case *rsa.PublicKey:
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		return []string{"ES256", "ES384", "ES512"}
	case ed25519.PublicKey:
		return []string{"EdDSA"}
	}
	return nil
}

// ErrTokenExpired and ErrTokenInvalid classify verification failures.
// Their texts are the protocol's, which clients show as they are.
var (
	ErrTokenExpired = errors.New(AuthExpired) //lint:ignore ST1005 the protocol's text
	ErrTokenInvalid = errors.New(AuthInvalid) //lint:ignore ST1005 the protocol's text
)

// Verify checks token's signature, algorithm and claims.
func (a *Authenticator) Verify(token string) (*Identity, error) {
	claims := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(token, claims, a.key)
	if errors.Is(err, jwt.ErrTokenExpired) {
		return nil, ErrTokenExpired
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	user, _ := claims[a.cfg.UserClaim].(string)
	if !ValidUserID(user) {
		return nil, fmt.Errorf("%w: claim %q is not a valid user id", ErrTokenInvalid, a.cfg.UserClaim)
	}
	id := &Identity{User: user}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.Expires = exp.Time
	}
	if id.Subscribe, err = patternsClaim(claims, "channels"); err != nil {
		return nil, err
	}
	if id.Publish, err = patternsClaim(claims, "publish"); err != nil {
		return nil, err
	}
	if id.Send, err = patternsClaim(claims, "send"); err != nil {
		return nil, err
	}
	if info, ok := claims["info"]; ok {
		id.Info, _ = json.Marshal(info)
	}
	return id, nil
}

func (a *Authenticator) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(a.hmac) == 0 {
			return nil, errors.New("no HMAC secret configured")
		}
		return a.hmac, nil
	}
	if kid, ok := t.Header["kid"].(string); ok && kid != "" {
		if k, ok := a.byKID[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("unknown kid %q", kid)
	}
	var keys jwt.VerificationKeySet
	for _, k := range a.keys {
		if fits(t.Method.Alg(), k) {
			keys.Keys = append(keys.Keys, k)
		}
	}
	if len(keys.Keys) == 0 {
		return nil, fmt.Errorf("no key for %s", t.Method.Alg())
	}
	return keys, nil
}

func fits(alg string, k crypto.PublicKey) bool {
	for _, m := range methodsFor(k) {
		if m == alg {
			return true
		}
	}
	return false
}

func patternsClaim(claims jwt.MapClaims, name string) ([]string, error) {
	raw, ok := claims[name]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: claim %q must be a list of patterns", ErrTokenInvalid, name)
	}
	out := make([]string, 0, len(list))
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: claim %q must be a list of strings", ErrTokenInvalid, name)
		}
		out = append(out, s)
	}
	return out, nil
}

func parsePublicKeyPEM(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type == "RSA PUBLIC KEY" {
		return x509.ParsePKCS1PublicKey(block.Bytes)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	switch key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return key, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", key)
}

type jwk struct {
	Kty, Kid, Use, Crv, N, E, X, Y string
}

func parseJWKS(data []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, err
	}
	out := map[string]crypto.PublicKey{}
	for i, k := range set.Keys {
		if k.Kid == "" {
			return nil, fmt.Errorf("key %d has no kid", i)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		key, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Kid, err)
		}
		out[k.Kid] = key
	}
	if len(out) == 0 {
		return nil, errors.New("no signing keys")
	}
	return out, nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	b64 := func(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")) }
	switch k.Kty {
	case "RSA":
		n, err1 := b64(k.N)
		e, err2 := b64(k.E)
		if err := errors.Join(err1, err2); err != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA n or e")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		x, err1 := b64(k.X)
		y, err2 := b64(k.Y)
		if err := errors.Join(err1, err2); err != nil {
			return nil, errors.New("bad EC x or y")
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) != size || len(y) != size {
			return nil, errors.New("bad EC point size")
		}
		raw := append(append([]byte{4}, x...), y...)
		key, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
		if err != nil {
			return nil, err
		}
		return key, nil
	case "OKP":
		x, err := b64(k.X)
		if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("unsupported kty %q", k.Kty)
}
