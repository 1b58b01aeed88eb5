package transport

import (
	"net"
	"time"
)

// Options configure the client-facing server. NewServer gives a zero
// field its value from DefaultOptions, except where zero means "off"
// (said at the field), so Options{} serves clients sensibly.
type Options struct {
	MaxFrameBytes     int // a larger client frame closes the connection with 1009
	Limits            Limits
	Outbox            OutboxLimits
	APIKey            string // empty: the HTTP API is off
	ReadHeaderTimeout time.Duration

	// Auth is nil in open development mode: identity comes from the
	// X-User-ID header or ?user=.
	Auth        *Authenticator
	AuthTimeout time.Duration
	// Permissions for tokens without `channels`/`publish`/`send` claims
	// (and for every connection in development mode), and deny rules that
	// hold whatever a token says. A nil default allows everything (`*`);
	// an empty one, as ParsePatterns("") returns, allows nothing.
	DefaultSubscribe, DefaultPublish, DefaultSend Patterns
	DenySubscribe, DenyPublish, DenySend          Patterns

	RateLimit float64 // publications (message, send) a second per connection; 0: unlimited
	RateBurst int
	// ControlRateLimit bounds every other frame a connection sends
	// (subscribe, unsubscribe, presence, history, ping, auth, and frames
	// that are not valid): a budget of their own, so a client that joins
	// hundreds of channels at once is not refused, nor starves its
	// publications. 0: unlimited.
	ControlRateLimit float64
	ControlRateBurst int
	RateDisconnect   bool    // close with 4008 instead of dropping the frame
	UserRateLimit    float64 // publications a second per user on this node; 0: unlimited
	UserRateBurst    int
	MaxConnsPerIP    int // 0: unlimited
	AllowedOrigins   []string
	PingInterval     time.Duration // 0: no pings
	IdleTimeout      time.Duration // 0: a silent connection stays open
	// Ready reports cluster membership for /readyz; nil: always ready.
	Ready func() bool
	// TrustedProxies may name the client in X-Forwarded-For.
	TrustedProxies []*net.IPNet
	// Profiling serves net/http/pprof under /debug/pprof/.
	Profiling bool
}

// DefaultOptions are the options the broker runs with unless told
// otherwise, the defaults of its flags.
func DefaultOptions() Options {
	return Options{
		MaxFrameBytes:     64 << 10,
		Limits:            Limits{MaxDataBytes: 60 << 10, MaxChannelBytes: MaxChannelNameBytes, MaxInfoBytes: 1024},
		Outbox:            OutboxLimits{MaxFrames: 4096, MaxBytes: 4 << 20, WriteTimeout: 10 * time.Second},
		ReadHeaderTimeout: 10 * time.Second,
		AuthTimeout:       5 * time.Second,
		DefaultSubscribe:  Patterns{"*"},
		DefaultPublish:    Patterns{"*"},
		DefaultSend:       Patterns{"*"},
		// A game sends inputs at 20-60 Hz and an editor keystrokes in
		// bursts; a page joins hundreds of channels at once after every
		// reconnect. Abuse stays bounded: 100 publications a second is
		// far below what one core fans out, and the control budget
		// refills 50 a second after a burst of 500.
		RateLimit:        100,
		RateBurst:        300,
		ControlRateLimit: 50,
		ControlRateBurst: 500,
		UserRateBurst:    50,
		PingInterval:     25 * time.Second,
		IdleTimeout:      60 * time.Second,
	}
}

// withDefaults fills the zero fields of o whose zero would not work (a
// connection closed at its first frame, every publication too large, a
// client that may do nothing) from DefaultOptions. Fields whose zero
// means "off" (rate limits, pings, the idle timeout, limits per address,
// the info limit) stay as they are.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	fill(&o.MaxFrameBytes, d.MaxFrameBytes)
	fill(&o.Limits.MaxDataBytes, d.Limits.MaxDataBytes)
	fill(&o.Limits.MaxChannelBytes, d.Limits.MaxChannelBytes)
	fill(&o.Outbox.MaxFrames, d.Outbox.MaxFrames)
	fill(&o.Outbox.MaxBytes, d.Outbox.MaxBytes)
	fill(&o.Outbox.WriteTimeout, d.Outbox.WriteTimeout)
	fill(&o.ReadHeaderTimeout, d.ReadHeaderTimeout)
	fill(&o.AuthTimeout, d.AuthTimeout)
	fill(&o.RateBurst, d.RateBurst)
	fill(&o.ControlRateBurst, d.ControlRateBurst)
	fill(&o.UserRateBurst, d.UserRateBurst)
	if o.DefaultSubscribe == nil {
		o.DefaultSubscribe = d.DefaultSubscribe
	}
	if o.DefaultPublish == nil {
		o.DefaultPublish = d.DefaultPublish
	}
	if o.DefaultSend == nil {
		o.DefaultSend = d.DefaultSend
	}
	return o
}

// fill sets *field to def if it is zero.
func fill[T int | time.Duration](field *T, def T) {
	if *field == 0 {
		*field = def
	}
}
