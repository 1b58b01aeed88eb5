package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/switchboard/switchboard/actors"
)

// The broker's settings, their defaults and their checks are
// actors.Config's; this file gives each one a flag and a SWITCHBOARD_*
// variable.

// flags binds every setting of cfg, its current value as the default, to
// a flag of fs.
func flags(fs *flag.FlagSet, c *actors.Config) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address for WebSocket clients (/ws) and HTTP (/api/, /healthz, /metrics)")
	fs.StringVar(&c.NodeAddr, "node-addr", c.NodeAddr, "listen address for traffic between cluster nodes (port 0: any free port)")
	fs.StringVar(&c.NodeAdvertise, "node-advertise", c.NodeAdvertise, "host other nodes reach this one at, when --node-addr binds all interfaces")
	fs.StringVar(&c.ClusterEtcd, "cluster-etcd", c.ClusterEtcd, "comma-separated etcd endpoints; set, the node joins a multi-node cluster")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "name of the cluster in etcd; nodes join members of the same name")
	fs.DurationVar(&c.ClusterLeaseTTL, "cluster-lease-ttl", c.ClusterLeaseTTL, "etcd lease of a node's membership: how long a dead node stays a member (whole seconds)")
	fs.StringVar(&c.APIKey, "api-key", c.APIKey, "key for the HTTP API under /api/; empty turns the API off")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.StringVar(&c.ClusterLogLevel, "cluster-log-level", c.ClusterLogLevel, "level of the actor runtime's own logs")
	fs.IntVar(&c.MaxFrameBytes, "max-frame-bytes", c.MaxFrameBytes, "largest client frame; a larger one closes the connection with 1009")
	fs.IntVar(&c.MaxDataBytes, "max-data-bytes", c.MaxDataBytes, "largest `data` of a publication or send (error data_too_large)")
	fs.IntVar(&c.OutboxMessages, "outbox-messages", c.OutboxMessages, "frames that may wait for one connection before it is closed as a slow consumer (4009)")
	fs.IntVar(&c.OutboxBytes, "outbox-bytes", c.OutboxBytes, "bytes that may wait for one connection before it is closed as a slow consumer (4009)")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "longest a socket write may block before the connection is dropped")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", c.RequestTimeout, "longest wait for a channel or session to answer")
	fs.DurationVar(&c.GrainIdleTimeout, "grain-idle-timeout", c.GrainIdleTimeout, "how long an unused channel or session stays in memory")
	fs.Float64Var(&c.LookupRate, "lookup-rate-limit", c.LookupRate, "channels and users a second this node may look up without knowing where they live (each may be activated); more are answered unavailable (0: unlimited)")
	fs.IntVar(&c.LookupBurst, "lookup-rate-burst", c.LookupBurst, "bursts allowed above --lookup-rate-limit")
	fs.IntVar(&c.ChannelReplicas, "channel-replicas", c.ChannelReplicas, "other cluster members that keep a copy of each channel's state, so it survives its node (0: none)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "longest a graceful shutdown may take")

	fs.StringVar(&c.JWTSecret, "jwt-secret", c.JWTSecret, "HMAC secret for HS256/384/512 tokens; any key turns authentication on")
	fs.StringVar(&c.JWTPublicKeys, "jwt-public-key", c.JWTPublicKeys, "comma-separated PEM files of public keys for RS*, PS*, ES* and EdDSA tokens")
	fs.StringVar(&c.JWTJWKS, "jwt-jwks", c.JWTJWKS, "JSON Web Key Set file; tokens pick a key by kid")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", c.JWTIssuer, "required iss claim (empty: not checked)")
	fs.StringVar(&c.JWTAudience, "jwt-audience", c.JWTAudience, "required aud claim (empty: not checked)")
	fs.DurationVar(&c.JWTLeeway, "jwt-leeway", c.JWTLeeway, "clock skew allowed for exp and nbf")
	fs.StringVar(&c.JWTUserClaim, "jwt-user-claim", c.JWTUserClaim, "claim that holds the user id")
	fs.DurationVar(&c.AuthTimeout, "auth-timeout", c.AuthTimeout, "time a connection has to send its auth frame")
	fs.StringVar(&c.SubscribeDefault, "subscribe-default", c.SubscribeDefault, "channel patterns a client may subscribe to when its token has no channels claim")
	fs.StringVar(&c.PublishDefault, "publish-default", c.PublishDefault, "channel patterns a client may publish to when its token has no publish claim")
	fs.StringVar(&c.SubscribeDeny, "subscribe-deny", c.SubscribeDeny, "channel patterns no client may subscribe to, whatever its token says")
	fs.StringVar(&c.PublishDeny, "publish-deny", c.PublishDeny, "channel patterns no client may publish to, e.g. presence:* for read-only namespaces")
	fs.StringVar(&c.SendDefault, "send-default", c.SendDefault, "user id patterns a client may send to when its token has no send claim (empty: nobody)")
	fs.StringVar(&c.SendDeny, "send-deny", c.SendDeny, "user id patterns no client may send to, whatever its token says, e.g. bot:*")

	fs.Float64Var(&c.RateLimit, "rate-limit", c.RateLimit, "publications (message, send) a second one connection may send (0: unlimited)")
	fs.IntVar(&c.RateBurst, "rate-burst", c.RateBurst, "burst above --rate-limit")
	fs.Float64Var(&c.ControlRateLimit, "control-rate-limit", c.ControlRateLimit, "other frames (subscribe, unsubscribe, presence, history, ping, auth, invalid ones) a second one connection may send (0: unlimited)")
	fs.IntVar(&c.ControlRateBurst, "control-rate-burst", c.ControlRateBurst, "burst above --control-rate-limit")
	fs.StringVar(&c.RateLimitPolicy, "rate-limit-policy", c.RateLimitPolicy, "over the limit: drop (the frame, with an error) or disconnect (close 4008)")
	fs.Float64Var(&c.UserRateLimit, "user-rate-limit", c.UserRateLimit, "publications a second one user may send over all their connections on a node (0: unlimited)")
	fs.IntVar(&c.UserRateBurst, "user-rate-burst", c.UserRateBurst, "burst above --user-rate-limit")
	fs.IntVar(&c.MaxConnsPerUser, "max-connections-per-user", c.MaxConnsPerUser, "connections one user may hold across the cluster (0: unlimited); more close with 4029")
	fs.IntVar(&c.MaxConnsPerIP, "max-connections-per-ip", c.MaxConnsPerIP, "connections one client address may hold on a node (0: unlimited); more get HTTP 429")
	fs.IntVar(&c.MaxSubscriptions, "max-subscriptions", c.MaxSubscriptions, "channels one connection may subscribe to (0: unlimited)")
	fs.IntVar(&c.MaxChannelBytes, "max-channel-bytes", c.MaxChannelBytes, "longest channel name, at most 255")
	fs.StringVar(&c.AllowedOrigins, "allowed-origins", c.AllowedOrigins, "comma-separated Origin allow-list, e.g. https://game.example,https://*.example.com (empty: any)")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", c.TrustedProxies, "comma-separated CIDRs of proxies whose X-Forwarded-For names the client (e.g. 127.0.0.1/32)")
	fs.IntVar(&c.HistorySize, "history-size", c.HistorySize, "publications each channel keeps for history and recovery (0: none); per namespace with --namespaces")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", c.HistoryTTL, "how long kept publications stay")
	fs.StringVar(&c.Namespaces, "namespaces", c.Namespaces, "per-namespace options, e.g. 'chat:history=100/5m;lobby:presence,capacity=4'")
	fs.IntVar(&c.MaxInfoBytes, "max-info-bytes", c.MaxInfoBytes, "largest presence info a subscribe frame may carry")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve Go profiles under /debug/pprof/ (for benchmarking; keep off in production)")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "how often the server pings each connection (0: never)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "a connection silent for longer is closed with 4011 (0: never)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", c.ReadHeaderTimeout, "time a client has to send its HTTP request headers")
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	return "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseConfig reads flags, then fills every flag not given from its
// environment variable, and checks the result.
func parseConfig(args []string, stderr io.Writer) (actors.Config, error) {
	cfg := actors.NewConfig()
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags(fs, &cfg)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: switchboard [flags]\n       switchboard token --user U --secret S [--ttl 1h] [--channels P,...] [--publish P,...]\n       switchboard dev-cluster [--nodes 3] [-- broker flags]\n\nRuns the Switchboard broker. Every flag --foo-bar may also be set as SWITCHBOARD_FOO_BAR.\n\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(stderr, "  --%s (env %s)\n    \t%s (default %q)\n", f.Name, envName(f.Name), f.Usage, f.DefValue)
		})
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		value, ok := os.LookupEnv(envName(f.Name))
		if given[f.Name] || !ok || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, value); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), value, err)
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	if err := refuseReplacedZeros(cfg, given); err != nil {
		return cfg, err
	}
	// An empty pattern list given on the command line allows nobody, as
	// it always has; in a Config, empty takes the default.
	for _, patterns := range []*string{&cfg.SubscribeDefault, &cfg.PublishDefault, &cfg.SendDefault} {
		if *patterns == "" {
			*patterns = actors.Nobody
		}
	}
	return cfg, cfg.Validate()
}

// refuseReplacedZeros refuses a flag given as zero or empty where a Config
// takes zero for "the default": on the command line that is a mistake to
// report, not to paper over. The pattern lists are exempt (empty allows
// nobody there).
func refuseReplacedZeros(cfg actors.Config, given map[string]bool) error {
	filled := cfg.WithDefaults()
	asGiven, asFilled := flag.NewFlagSet("given", flag.ContinueOnError), flag.NewFlagSet("filled", flag.ContinueOnError)
	flags(asGiven, &cfg)
	flags(asFilled, &filled)
	var err error
	asGiven.VisitAll(func(f *flag.Flag) {
		exempt := strings.HasSuffix(f.Name, "-default")
		if err == nil && given[f.Name] && !exempt && f.Value.String() != asFilled.Lookup(f.Name).Value.String() {
			err = fmt.Errorf("--%s %q is not allowed (leave it out for the default, %s)", f.Name, f.Value.String(), asFilled.Lookup(f.Name).Value.String())
		}
	})
	return err
}
