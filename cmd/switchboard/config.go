package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// config is every setting of the broker, with its defaults, filled from
// flags and from SWITCHBOARD_* environment variables (flags win).
type config struct {
	Addr             string
	NodeAddr         string
	APIKey           string
	LogLevel         string
	LogFormat        string
	ClusterLogLevel  string
	MaxFrameBytes    int
	MaxDataBytes     int
	OutboxMessages   int
	OutboxBytes      int
	WriteTimeout     time.Duration
	RequestTimeout   time.Duration
	GrainIdleTimeout time.Duration
	ShutdownTimeout  time.Duration
}

func defaultConfig() config {
	return config{
		Addr:             "127.0.0.1:8765",
		NodeAddr:         "127.0.0.1:0",
		LogLevel:         "info",
		LogFormat:        "text",
		ClusterLogLevel:  "warn",
		MaxFrameBytes:    64 << 10,
		MaxDataBytes:     60 << 10,
		OutboxMessages:   4096,
		OutboxBytes:      4 << 20,
		WriteTimeout:     10 * time.Second,
		RequestTimeout:   5 * time.Second,
		GrainIdleTimeout: 30 * time.Second,
		ShutdownTimeout:  10 * time.Second,
	}
}

func (c *config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address for WebSocket clients (/ws) and HTTP (/api/, /healthz, /metrics)")
	fs.StringVar(&c.NodeAddr, "node-addr", c.NodeAddr, "listen address for traffic between cluster nodes (port 0: any free port)")
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
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "longest a graceful shutdown may take")
}

// envName is the environment variable that sets flag name.
func envName(name string) string {
	return "SWITCHBOARD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseConfig reads flags, then fills every flag not given from its
// environment variable.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("switchboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: switchboard [flags]\n\nRuns the Switchboard broker. Every flag --foo-bar may also be set as SWITCHBOARD_FOO_BAR.\n\nFlags:\n")
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
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	switch {
	case c.MaxFrameBytes < 1024:
		return fmt.Errorf("--max-frame-bytes must be at least 1024")
	case c.MaxDataBytes < 1 || c.MaxDataBytes > c.MaxFrameBytes:
		return fmt.Errorf("--max-data-bytes must be between 1 and --max-frame-bytes")
	case c.OutboxMessages < 1 || c.OutboxBytes < 1024:
		return fmt.Errorf("--outbox-messages must be positive and --outbox-bytes at least 1024")
	case c.RequestTimeout <= 0 || c.GrainIdleTimeout <= 0:
		return fmt.Errorf("--request-timeout and --grain-idle-timeout must be positive")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if _, err := parseLevel(c.ClusterLogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format must be text or json")
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
