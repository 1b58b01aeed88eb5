package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/switchboard/switchboard/transport"
)

// Config is every setting of a Switchboard node, one field per flag of
// cmd/switchboard and in that flag's own syntax (durations, comma-separated
// lists, pattern lists), so flags, SWITCHBOARD_* variables and programs
// that embed the broker configure it alike.
//
// Start from NewConfig, which fills in every default, and change what you
// need. A zero field takes NewConfig's value when Start runs, except the
// fields whose comment gives their zero a meaning of its own ("0:
// unlimited", "0: none"): those keep it, so a Config{} literal runs with
// no rate limits, no heartbeats and no channel replicas, where NewConfig
// has the recommended ones.
type Config struct {
	// Addr is where WebSocket clients (/ws) and HTTP (/api/, /healthz,
	// /metrics) connect (--addr); port 0 picks a free port, see
	// Switchboard.Addr.
	Addr string
	// NodeAddr carries traffic between cluster nodes (--node-addr; port 0:
	// any free port).
	NodeAddr string
	// NodeAdvertise is the host (or host:port) other nodes reach this one
	// at, when NodeAddr binds every interface (--node-advertise).
	NodeAdvertise string
	// ClusterEtcd lists etcd endpoints, comma-separated (--cluster-etcd);
	// set, the node joins a multi-node cluster; empty: a single node.
	ClusterEtcd string
	// ClusterName is the cluster's name in etcd (--cluster-name).
	ClusterName string
	// ClusterLeaseTTL is how long a dead node stays a member, whole seconds
	// (--cluster-lease-ttl).
	ClusterLeaseTTL time.Duration
	// APIKey guards the HTTP API under /api/ (--api-key); empty: no API.
	APIKey string

	// Log receives the node's logs; nil: a handler on standard error at
	// LogLevel in LogFormat.
	Log *slog.Logger
	// LogLevel is debug, info, warn or error (--log-level).
	LogLevel string
	// LogFormat is text or json (--log-format).
	LogFormat string
	// ClusterLogLevel is the floor of the actor runtime's own logs
	// (--cluster-log-level).
	ClusterLogLevel string

	// MaxFrameBytes is the largest client frame; a larger one closes the
	// connection with 1009 (--max-frame-bytes).
	MaxFrameBytes int
	// MaxDataBytes is the largest `data` of a publication or send
	// (--max-data-bytes).
	MaxDataBytes int
	// OutboxMessages and OutboxBytes may wait for one connection before it
	// is closed as a slow consumer, 4009 (--outbox-messages, --outbox-bytes).
	OutboxMessages int
	OutboxBytes    int
	// WriteTimeout is the longest a socket write may block (--write-timeout).
	WriteTimeout time.Duration
	// RequestTimeout is the longest wait for a channel or session to answer
	// (--request-timeout).
	RequestTimeout time.Duration
	// GrainIdleTimeout is how long an unused channel or session stays in
	// memory (--grain-idle-timeout).
	GrainIdleTimeout time.Duration
	// ShutdownTimeout bounds Close (--shutdown-timeout).
	ShutdownTimeout time.Duration
	// ChannelReplicas other members keep a copy of each channel's state
	// (--channel-replicas); 0: none.
	ChannelReplicas int
	// LookupRate bounds the channels and users a second this node looks up
	// without knowing where they live, with bursts of LookupBurst
	// (--lookup-rate-limit, --lookup-rate-burst); 0: no bound.
	LookupRate  float64
	LookupBurst int

	// JWTSecret, JWTPublicKeys (comma-separated PEM files) and JWTJWKS (a
	// JSON Web Key Set file) are the keys tokens may be signed with; with
	// none, the node runs in open development mode (--jwt-secret,
	// --jwt-public-key, --jwt-jwks).
	JWTSecret     string
	JWTPublicKeys string
	JWTJWKS       string
	// JWTIssuer and JWTAudience are required claims; empty: not checked.
	JWTIssuer   string
	JWTAudience string
	// JWTLeeway is the clock skew allowed for exp and nbf; 0: none.
	JWTLeeway time.Duration
	// JWTUserClaim holds the user id (--jwt-user-claim).
	JWTUserClaim string
	// AuthTimeout is the time a connection has to send its auth frame.
	AuthTimeout time.Duration
	// SubscribeDefault, PublishDefault and SendDefault are the channel (or,
	// for SendDefault, user id) patterns a connection may use when its
	// token has no such claim, comma-separated; Nobody allows none
	// (--subscribe-default, --publish-default, --send-default).
	SubscribeDefault string
	PublishDefault   string
	SendDefault      string
	// SubscribeDeny, PublishDeny and SendDeny are patterns no client may
	// use, whatever its token says; empty: none.
	SubscribeDeny string
	PublishDeny   string
	SendDeny      string

	// RateLimit publications (message, send) a second per connection,
	// above a burst of RateBurst (--rate-limit, --rate-burst); 0: unlimited.
	RateLimit float64
	RateBurst int
	// ControlRateLimit other frames a second per connection, above a burst
	// of ControlRateBurst; 0: unlimited.
	ControlRateLimit float64
	ControlRateBurst int
	// RateLimitPolicy is drop (the frame, with an error) or disconnect
	// (close 4008).
	RateLimitPolicy string
	// UserRateLimit publications a second per user on this node, above a
	// burst of UserRateBurst; 0: unlimited.
	UserRateLimit float64
	UserRateBurst int
	// MaxConnsPerUser (across the cluster, close 4029) and MaxConnsPerIP
	// (on this node, HTTP 429) cap connections; 0: unlimited.
	MaxConnsPerUser int
	MaxConnsPerIP   int
	// MaxSubscriptions bounds one connection's channels; 0: unlimited.
	MaxSubscriptions int
	// MaxChannelBytes is the longest channel name, at most 255.
	MaxChannelBytes int
	// AllowedOrigins is a comma-separated Origin allow-list with
	// `https://*.example.com` wildcards; empty: any.
	AllowedOrigins string
	// TrustedProxies are comma-separated CIDRs of proxies whose
	// X-Forwarded-For names the client; empty: none.
	TrustedProxies string
	// HistorySize publications each channel keeps for HistoryTTL, for
	// history and recovery; 0: none. Namespaces override both.
	HistorySize int
	HistoryTTL  time.Duration
	// Namespaces are per-namespace options, e.g.
	// 'chat:history=100/5m;lobby:presence,capacity=4'; empty: none.
	Namespaces string
	// MaxInfoBytes bounds the presence info a subscribe may carry; 0:
	// unlimited.
	MaxInfoBytes int
	// Pprof serves Go profiles under /debug/pprof/.
	Pprof bool
	// PingInterval is how often the server pings each connection, and a
	// connection silent for IdleTimeout is closed with 4011; 0: never.
	PingInterval time.Duration
	IdleTimeout  time.Duration
	// ReadHeaderTimeout is the time a client has to send its HTTP request
	// headers; 0: no limit.
	ReadHeaderTimeout time.Duration
}

// Nobody is a pattern list that allows nothing: as SubscribeDefault,
// PublishDefault or SendDefault, only tokens with the claim may.
const Nobody = "!*"

// NewConfig returns a Config with every default filled in: a single node
// serving ws://127.0.0.1:8765/ws in open development mode.
func NewConfig() Config {
	// The client-facing limits are the transport's own defaults.
	t := transport.DefaultOptions()
	return Config{
		Addr:             "127.0.0.1:8765",
		NodeAddr:         "127.0.0.1:0",
		ClusterName:      "switchboard",
		ClusterLeaseTTL:  3 * time.Second,
		LogLevel:         "info",
		LogFormat:        "text",
		ClusterLogLevel:  "warn",
		MaxFrameBytes:    t.MaxFrameBytes,
		MaxDataBytes:     t.Limits.MaxDataBytes,
		OutboxMessages:   t.Outbox.MaxFrames,
		OutboxBytes:      t.Outbox.MaxBytes,
		WriteTimeout:     t.Outbox.WriteTimeout,
		RequestTimeout:   5 * time.Second,
		GrainIdleTimeout: 30 * time.Second,
		ShutdownTimeout:  10 * time.Second,
		ChannelReplicas:  1,
		LookupRate:       2000,
		LookupBurst:      20000,

		JWTLeeway:        5 * time.Second,
		JWTUserClaim:     "sub",
		AuthTimeout:      t.AuthTimeout,
		SubscribeDefault: strings.Join(t.DefaultSubscribe, ","),
		PublishDefault:   strings.Join(t.DefaultPublish, ","),
		SendDefault:      strings.Join(t.DefaultSend, ","),

		RateLimit:         t.RateLimit,
		RateBurst:         t.RateBurst,
		ControlRateLimit:  t.ControlRateLimit,
		ControlRateBurst:  t.ControlRateBurst,
		RateLimitPolicy:   "drop",
		UserRateBurst:     t.UserRateBurst,
		MaxSubscriptions:  1000,
		MaxChannelBytes:   t.Limits.MaxChannelBytes,
		PingInterval:      t.PingInterval,
		IdleTimeout:       t.IdleTimeout,
		ReadHeaderTimeout: t.ReadHeaderTimeout,
		HistoryTTL:        5 * time.Minute,
		MaxInfoBytes:      t.Limits.MaxInfoBytes,
	}
}

// withDefaults fills every zero field that has no meaning of its own with
// NewConfig's value.
func (c Config) withDefaults() Config {
	d := NewConfig()
	fill(&c.Addr, d.Addr)
	fill(&c.NodeAddr, d.NodeAddr)
	fill(&c.ClusterName, d.ClusterName)
	fill(&c.ClusterLeaseTTL, d.ClusterLeaseTTL)
	fill(&c.LogLevel, d.LogLevel)
	fill(&c.LogFormat, d.LogFormat)
	fill(&c.ClusterLogLevel, d.ClusterLogLevel)
	fill(&c.MaxFrameBytes, d.MaxFrameBytes)
	fill(&c.MaxDataBytes, d.MaxDataBytes)
	fill(&c.OutboxMessages, d.OutboxMessages)
	fill(&c.OutboxBytes, d.OutboxBytes)
	fill(&c.WriteTimeout, d.WriteTimeout)
	fill(&c.RequestTimeout, d.RequestTimeout)
	fill(&c.GrainIdleTimeout, d.GrainIdleTimeout)
	fill(&c.ShutdownTimeout, d.ShutdownTimeout)
	fill(&c.JWTUserClaim, d.JWTUserClaim)
	fill(&c.AuthTimeout, d.AuthTimeout)
	fill(&c.SubscribeDefault, d.SubscribeDefault)
	fill(&c.PublishDefault, d.PublishDefault)
	fill(&c.SendDefault, d.SendDefault)
	fill(&c.RateBurst, d.RateBurst)
	fill(&c.ControlRateBurst, d.ControlRateBurst)
	fill(&c.RateLimitPolicy, d.RateLimitPolicy)
	fill(&c.UserRateBurst, d.UserRateBurst)
	fill(&c.MaxChannelBytes, d.MaxChannelBytes)
	fill(&c.HistoryTTL, d.HistoryTTL)
	return c
}

func fill[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// Validate reports the first setting Start would refuse, naming its flag.
// Zero fields are checked as the defaults Start gives them.
func (c Config) Validate() error {
	_, err := c.withDefaults().settings()
	return err
}

// WithDefaults returns c with its zero fields filled as Start fills
// them (those whose zero means something, like "unlimited", are kept).
func (c Config) WithDefaults() Config { return c.withDefaults() }

// settings are the parsed forms of a Config's text settings.
type settings struct {
	logLevel, clusterLogLevel slog.Level
	namespaces                Namespaces
	trustedProxies            []*net.IPNet
}

// settings checks c, whose zero fields are filled, and parses it.
func (c Config) settings() (settings, error) {
	var s settings
	switch {
	case c.MaxFrameBytes < 1024:
		return s, errors.New("--max-frame-bytes must be at least 1024")
	case c.MaxDataBytes < 1 || c.MaxDataBytes > c.MaxFrameBytes:
		return s, errors.New("--max-data-bytes must be between 1 and --max-frame-bytes")
	case c.OutboxMessages < 1 || c.OutboxBytes < 1024:
		return s, errors.New("--outbox-messages must be positive and --outbox-bytes at least 1024")
	case c.RequestTimeout <= 0 || c.GrainIdleTimeout <= 0:
		return s, errors.New("--request-timeout and --grain-idle-timeout must be positive")
	case c.ChannelReplicas < 0 || c.ChannelReplicas > 8:
		return s, errors.New("--channel-replicas must be between 0 and 8")
	case c.LookupRate < 0 || c.LookupBurst < 0:
		return s, errors.New("--lookup-rate-limit and --lookup-rate-burst must not be negative")
	}
	var err error
	if s.logLevel, err = parseLevel("--log-level", c.LogLevel); err != nil {
		return s, err
	}
	if s.clusterLogLevel, err = parseLevel("--cluster-log-level", c.ClusterLogLevel); err != nil {
		return s, err
	}
	if c.RateLimitPolicy != "drop" && c.RateLimitPolicy != "disconnect" {
		return s, errors.New("--rate-limit-policy must be drop or disconnect")
	}
	if c.MaxChannelBytes < 1 || c.MaxChannelBytes > 255 {
		return s, errors.New("--max-channel-bytes must be between 1 and 255")
	}
	if c.RateLimit < 0 || c.UserRateLimit < 0 || c.ControlRateLimit < 0 || c.RateBurst < 1 || c.UserRateBurst < 1 || c.ControlRateBurst < 1 {
		return s, errors.New("rate limits must not be negative and bursts must be at least 1")
	}
	if c.HistorySize < 0 || c.HistoryTTL <= 0 {
		return s, errors.New("--history-size must not be negative and --history-ttl must be positive")
	}
	base := ChannelOptions{HistorySize: c.HistorySize, HistoryTTL: c.HistoryTTL}
	byName, err := ParseNamespaces(c.Namespaces, base)
	if err != nil {
		return s, fmt.Errorf("--namespaces: %w", err)
	}
	s.namespaces = Namespaces{Default: base, ByName: byName}
	for _, cidr := range splitList(c.TrustedProxies) {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			return s, fmt.Errorf("--trusted-proxies: %w", err)
		}
		s.trustedProxies = append(s.trustedProxies, n)
	}
	if c.AuthTimeout <= 0 {
		return s, errors.New("--auth-timeout must be positive")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return s, errors.New("--log-format must be text or json")
	}
	return s, nil
}

func parseLevel(flag, s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("%s %q: want debug, info, warn or error", flag, s)
	}
	return l, nil
}

// logger is c.Log, or a handler on standard error as LogLevel and
// LogFormat say.
func (c Config) logger(level slog.Level) *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// authConfig reads the configured keys.
func (c Config) authConfig() (transport.AuthConfig, error) {
	ac := transport.AuthConfig{
		HMACSecret: []byte(c.JWTSecret),
		Issuer:     c.JWTIssuer,
		Audience:   c.JWTAudience,
		Leeway:     c.JWTLeeway,
		UserClaim:  c.JWTUserClaim,
	}
	for _, path := range splitList(c.JWTPublicKeys) {
		pem, err := os.ReadFile(path)
		if err != nil {
			return ac, fmt.Errorf("--jwt-public-key: %w", err)
		}
		ac.PublicKeyPEMs = append(ac.PublicKeyPEMs, pem)
	}
	if c.JWTJWKS != "" {
		jwks, err := os.ReadFile(c.JWTJWKS)
		if err != nil {
			return ac, fmt.Errorf("--jwt-jwks: %w", err)
		}
		ac.JWKS = jwks
	}
	return ac, nil
}

// splitList splits a comma-separated setting, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
