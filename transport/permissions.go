package transport

import "strings"

// Patterns is a list of channel (or user id) patterns: `lobby:42` (exact),
// `chat:*` (prefix), `*` (all); an entry starting with `!` denies, and a
// deny wins.
type Patterns []string

// ParsePatterns splits a comma-separated list. An empty list gives empty
// Patterns, not nil: as an Options default it allows nothing.
func ParsePatterns(list string) Patterns {
	out := Patterns{}
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Allows reports whether channel matches an allowing pattern and no denying one.
func (ps Patterns) Allows(channel string) bool {
	allowed := false
	for _, p := range ps {
		if deny, ok := strings.CutPrefix(p, "!"); ok {
			if matchPattern(deny, channel) {
				return false
			}
		} else if !allowed && matchPattern(p, channel) {
			allowed = true
		}
	}
	return allowed
}

func matchPattern(pattern, channel string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(channel, prefix)
	}
	return pattern == channel
}

// Permissions decide what a connection may do with channels, and to which
// users it may send.
type Permissions struct {
	Subscribe Patterns // from the token, else the default
	Publish   Patterns
	Send      Patterns // user ids
	// Deny rules that hold whatever a token says, e.g. `presence:*` read-only.
	DenySubscribe Patterns
	DenyPublish   Patterns
	DenySend      Patterns
}

func (p *Permissions) CanSubscribe(channel string) bool {
	return p.Subscribe.Allows(channel) && !matchesAny(p.DenySubscribe, channel)
}

func (p *Permissions) CanPublish(channel string) bool {
	return p.Publish.Allows(channel) && !matchesAny(p.DenyPublish, channel)
}

// CanSend reports whether a `send` to user is allowed.
func (p *Permissions) CanSend(user string) bool {
	return p.Send.Allows(user) && !matchesAny(p.DenySend, user)
}

func matchesAny(ps Patterns, channel string) bool {
	for _, p := range ps {
		if matchPattern(strings.TrimPrefix(p, "!"), channel) {
			return true
		}
	}
	return false
}
