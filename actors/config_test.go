package actors

import (
	"strings"
	"testing"
	"time"
)

// A Config literal needs only the fields it cares about: the zero of a
// field without a meaning of its own takes NewConfig's value, the zero of
// one with ("0: unlimited") stays.
func TestZeroFieldsTakeTheDefaults(t *testing.T) {
	got := Config{Addr: "127.0.0.1:0", RateLimit: 7}.withDefaults()
	if err := got.Validate(); err != nil {
		t.Fatalf("a nearly empty Config: %v", err)
	}
	want := NewConfig()
	if got.Addr != "127.0.0.1:0" || got.RateLimit != 7 {
		t.Fatalf("set fields changed: addr %q, rate limit %v", got.Addr, got.RateLimit)
	}
	if got.MaxFrameBytes != want.MaxFrameBytes || got.RequestTimeout != want.RequestTimeout ||
		got.OutboxMessages != want.OutboxMessages || got.SubscribeDefault != "*" || got.ShutdownTimeout != want.ShutdownTimeout {
		t.Fatalf("zero fields not filled: %+v", got)
	}
	if got.ChannelReplicas != 0 || got.ControlRateLimit != 0 || got.PingInterval != 0 {
		t.Fatalf("zero fields with a meaning of their own were filled: %+v", got)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("Config{}: %v", err)
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	for _, tc := range []struct {
		change func(*Config)
		flag   string
	}{
		{func(c *Config) { c.MaxFrameBytes = 100 }, "--max-frame-bytes"},
		{func(c *Config) { c.MaxDataBytes = c.MaxFrameBytes + 1 }, "--max-data-bytes"},
		{func(c *Config) { c.ChannelReplicas = 9 }, "--channel-replicas"},
		{func(c *Config) { c.LogLevel = "loud" }, "--log-level"},
		{func(c *Config) { c.ClusterLogLevel = "loud" }, "--cluster-log-level"},
		{func(c *Config) { c.LogFormat = "xml" }, "--log-format"},
		{func(c *Config) { c.RateLimitPolicy = "ignore" }, "--rate-limit-policy"},
		{func(c *Config) { c.MaxChannelBytes = 256 }, "--max-channel-bytes"},
		{func(c *Config) { c.HistoryTTL = -time.Second }, "--history-ttl"},
		{func(c *Config) { c.Namespaces = "no colon" }, "--namespaces"},
		{func(c *Config) { c.TrustedProxies = "10.0.0.1" }, "--trusted-proxies"},
	} {
		cfg := NewConfig()
		tc.change(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("want an error naming %s, got %v", tc.flag, err)
		}
	}
}
