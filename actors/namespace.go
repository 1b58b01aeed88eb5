package actors

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ChannelOptions are the settings a channel takes from its namespace (the
// part of its name before the first `:`).
type ChannelOptions struct {
	// HistorySize publications are kept for HistoryTTL; 0: no history.
	HistorySize int
	HistoryTTL  time.Duration
	// Presence sends join/leave events to every subscriber, not only to
	// those that subscribed with "presence": true.
	Presence bool
	// Capacity caps the channel's distinct users; 0: unlimited.
	Capacity int
}

// Namespaces map namespace names to options; channels of other
// namespaces get Default.
type Namespaces struct {
	Default ChannelOptions
	ByName  map[string]ChannelOptions
}

// For returns the options of channel.
func (n Namespaces) For(channel string) ChannelOptions {
	if ns, _, ok := strings.Cut(channel, ":"); ok {
		if opts, found := n.ByName[ns]; found {
			return opts
		}
	}
	return n.Default
}

// ParseNamespaces reads `name:option,option;name:option`, with options
// `history=SIZE/TTL` (e.g. history=100/5m), `presence`, `capacity=N`.
// Options not given are taken from base.
func ParseNamespaces(spec string, base ChannelOptions) (map[string]ChannelOptions, error) {
	out := map[string]ChannelOptions{}
	for _, entry := range strings.Split(spec, ";") {
		if entry = strings.TrimSpace(entry); entry == "" {
			continue
		}
		name, options, ok := strings.Cut(entry, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " ,=") {
			return nil, fmt.Errorf("namespace entry %q: want name:option,option", entry)
		}
		opts := base
		for _, option := range strings.Split(options, ",") {
			key, value, _ := strings.Cut(strings.TrimSpace(option), "=")
			switch key {
			case "":
			case "presence":
				opts.Presence = value == "" || value == "true"
			case "capacity":
				n, err := strconv.Atoi(value)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("namespace %s: capacity=%q is not a count", name, value)
				}
				opts.Capacity = n
			case "history":
				size, ttl, ok := strings.Cut(value, "/")
				n, err1 := strconv.Atoi(size)
				d, err2 := time.ParseDuration(ttl)
				if !ok || err1 != nil || err2 != nil || n < 0 || d <= 0 {
					return nil, fmt.Errorf("namespace %s: history=%q, want SIZE/TTL like 100/5m", name, value)
				}
				opts.HistorySize, opts.HistoryTTL = n, d
			default:
				return nil, fmt.Errorf("namespace %s: unknown option %q (history, presence, capacity)", name, key)
			}
		}
		out[name] = opts
	}
	return out, nil
}
