// Command switchboard runs the Switchboard real-time message broker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboard/switchboard/actors"
	"github.com/switchboard/switchboard/cluster"
	"github.com/switchboard/switchboard/transport"
)

func main() {
	subcommands := map[string]func([]string, io.Writer, io.Writer) error{
		"token":       tokenCommand,
		"dev-cluster": devClusterCommand,
	}
	if len(os.Args) > 1 && subcommands[os.Args[1]] != nil {
		if err := subcommands[os.Args[1]](os.Args[2:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "switchboard:", err)
			os.Exit(2)
		}
		return
	}
	cfg, err := parseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	level, _ := parseLevel(cfg.LogLevel)
	clusterLevel, _ := parseLevel(cfg.ClusterLogLevel)
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)

	authConfig, err := cfg.authConfig()
	if err != nil {
		return err
	}
	auth, err := transport.NewAuthenticator(authConfig)
	if err != nil {
		return fmt.Errorf("authentication keys: %w", err)
	}
	if auth == nil {
		log.Warn("no JWT key configured: running in open development mode, clients choose their user id")
	}

	proxies, _ := cfg.trustedProxies() // validated with the rest of the configuration
	namespaces, _ := cfg.namespaces()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	metrics := transport.NewMetrics()
	broker := actors.NewBroker(actors.Options{
		RequestTimeout:        cfg.RequestTimeout,
		GrainIdleTimeout:      cfg.GrainIdleTimeout,
		MaxSubscriptions:      cfg.MaxSubscriptions,
		MaxConnectionsPerUser: cfg.MaxConnsPerUser,
		Namespaces:            namespaces,
		ChannelReplicas:       cfg.ChannelReplicas,
		LookupRate:            cfg.LookupRate,
		LookupBurst:           cfg.LookupBurst,
	}, metrics, log)
	node, err := cluster.Start(cluster.Config{
		Name:           cfg.ClusterName,
		NodeAddr:       cfg.NodeAddr,
		AdvertiseHost:  cfg.NodeAdvertise,
		EtcdEndpoints:  splitList(cfg.ClusterEtcd),
		LeaseTTL:       cfg.ClusterLeaseTTL,
		RequestTimeout: cfg.RequestTimeout,
		Log:            log,
		LogLevel:       clusterLevel,
		BeforeJoin:     func(n *cluster.Node) error { return broker.Start(n.Cluster, n) },
	}, broker.Kinds())
	if err != nil {
		return err
	}
	defer node.Stop()

	server := transport.NewServer(transport.Options{
		MaxFrameBytes:     cfg.MaxFrameBytes,
		Limits:            transport.Limits{MaxDataBytes: cfg.MaxDataBytes, MaxChannelBytes: cfg.MaxChannelBytes, MaxInfoBytes: cfg.MaxInfoBytes},
		Outbox:            transport.OutboxLimits{MaxFrames: cfg.OutboxMessages, MaxBytes: cfg.OutboxBytes, WriteTimeout: cfg.WriteTimeout},
		APIKey:            cfg.APIKey,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		Auth:              auth,
		AuthTimeout:       cfg.AuthTimeout,
		DefaultSubscribe:  transport.ParsePatterns(cfg.SubscribeDefault),
		DefaultPublish:    transport.ParsePatterns(cfg.PublishDefault),
		DenySubscribe:     transport.ParsePatterns(cfg.SubscribeDeny),
		DenyPublish:       transport.ParsePatterns(cfg.PublishDeny),
		DefaultSend:       transport.ParsePatterns(cfg.SendDefault),
		DenySend:          transport.ParsePatterns(cfg.SendDeny),
		RateLimit:         cfg.RateLimit,
		RateBurst:         cfg.RateBurst,
		ControlRateLimit:  cfg.ControlRateLimit,
		ControlRateBurst:  cfg.ControlRateBurst,
		RateDisconnect:    cfg.RateLimitPolicy == "disconnect",
		UserRateLimit:     cfg.UserRateLimit,
		UserRateBurst:     cfg.UserRateBurst,
		MaxConnsPerIP:     cfg.MaxConnsPerIP,
		AllowedOrigins:    splitList(cfg.AllowedOrigins),
		PingInterval:      cfg.PingInterval,
		IdleTimeout:       cfg.IdleTimeout,
		Ready:             node.Ready,
		TrustedProxies:    proxies,
		Profiling:         cfg.Pprof,
	}, broker, broker, metrics, log)

	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "ws", "ws://"+ln.Addr().String()+"/ws", "api", cfg.APIKey != "")

	uncertainCtx, stopWatchingStanding := context.WithCancel(context.Background())
	defer stopWatchingStanding()
	go broker.CloseClientsWhileUncertain(uncertainCtx, cfg.ClusterLeaseTTL, transport.CloseServiceRestart, "node cut off from the cluster")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	var lost error
	select {
	case err := <-serveErr:
		return err
	case sig := <-signals:
		log.Info("shutting down", "signal", sig.String())
	case <-node.Lost():
		// Its peers will never take this member id back: close the clients
		// so they reconnect to members in good standing, and make way for a
		// fresh member.
		lost = errors.New("left the cluster (its etcd lease expired); restart it to join as a new member")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if lost == nil {
		// Hand the channels over first, so they move with their history
		// while this node's clients are still served through them; then
		// close the clients while this node is still a member, so the
		// answers to their publications in flight reach them; then leave.
		if err := node.Drain(ctx); err != nil {
			log.Warn("draining", "err", err)
		} else {
			// Half the time at most: closing the clients and leaving need the rest.
			handOver, cancelHandOver := context.WithTimeout(ctx, cfg.ShutdownTimeout/2)
			broker.HandOverChannels(handOver)
			cancelHandOver()
		}
		closing, cancelClosing := context.WithTimeout(ctx, cfg.ShutdownTimeout/4)
		broker.CloseAll(closing, transport.CloseServiceRestart, "server restarting")
		cancelClosing()
		if err := node.Leave(ctx); err != nil {
			log.Warn("leaving the cluster", "err", err)
		}
	}
	if err := server.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	broker.CloseAll(ctx, transport.CloseServiceRestart, "server restarting")
	return lost
}
