package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard/switchboard/transport"
)

// tokenCommand mints an HS256 token for development and tests:
// switchboard token --user alice --secret S [--ttl 1h] [--channels 'chat:*'] ...
func tokenCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("switchboard token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user id (the sub claim)")
	secret := fs.String("secret", "", "HMAC secret, as given to the broker's --jwt-secret")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	channels := fs.String("channels", "", "comma-separated channel patterns the token may subscribe to (empty: the broker's default)")
	publish := fs.String("publish", "", "comma-separated channel patterns the token may publish to (empty: the broker's default)")
	send := fs.String("send", "", "comma-separated user id patterns the token may send to (empty: the broker's default)")
	info := fs.String("info", "", "JSON value for the info claim")
	issuer := fs.String("issuer", "", "iss claim")
	audience := fs.String("audience", "", "aud claim")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" || *secret == "" {
		return errors.New("token: --user and --secret are required")
	}
	claims := jwt.MapClaims{"sub": *user, "iat": time.Now().Unix(), "exp": time.Now().Add(*ttl).Unix()}
	if *channels != "" {
		claims["channels"] = []string(transport.ParsePatterns(*channels))
	}
	if *publish != "" {
		claims["publish"] = []string(transport.ParsePatterns(*publish))
	}
	if *send != "" {
		claims["send"] = []string(transport.ParsePatterns(*send))
	}
	if *info != "" {
		var v any
		if err := json.Unmarshal([]byte(*info), &v); err != nil {
			return fmt.Errorf("token: --info is not JSON: %w", err)
		}
		claims["info"] = v
	}
	if *issuer != "" {
		claims["iss"] = *issuer
	}
	if *audience != "" {
		claims["aud"] = *audience
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(*secret))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, signed)
	return err
}
