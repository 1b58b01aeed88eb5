package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Tokens: a fresh one from GetToken shortly before each expires.

// refreshTokens asks GetToken for a fresh token shortly before each one
// expires and hands it to the broker in an auth frame.
func (c *Client) refreshTokens(token string) {
	for {
		exp, ok := TokenExpiry(token)
		if !ok {
			return
		}
		select {
		case <-c.stop:
			return
		case <-time.After(time.Until(exp) - c.opts.RefreshBeforeExpiry):
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
		fresh, err := c.opts.GetToken(ctx)
		if err == nil {
			_, err = c.Request(ctx, map[string]any{"type": "auth", "token": fresh})
		}
		cancel()
		if err != nil {
			c.event(Event{Type: "error", Err: fmt.Errorf("token refresh: %w", err)})
			select {
			case <-c.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		token = fresh
	}
}

// TokenExpiry reads a JWT's exp claim without verifying it.
func TokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(int64(claims.Exp), 0), true
}
