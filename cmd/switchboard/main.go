// Command switchboard runs the Switchboard real-time message broker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchboard/switchboard/actors"
	"github.com/switchboard/switchboard/cluster"
	"github.com/switchboard/switchboard/transport"
)

func main() {
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

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	metrics := transport.NewMetrics()
	broker := actors.NewBroker(actors.Options{
		RequestTimeout:   cfg.RequestTimeout,
		GrainIdleTimeout: cfg.GrainIdleTimeout,
	}, metrics, log)
	node, err := cluster.Start(cluster.Config{
		Name:           "switchboard",
		NodeAddr:       cfg.NodeAddr,
		RequestTimeout: cfg.RequestTimeout,
		Log:            log,
		LogLevel:       clusterLevel,
	}, broker.Kinds())
	if err != nil {
		return err
	}
	defer node.Stop()
	if err := broker.Start(node.Cluster); err != nil {
		return err
	}

	server := transport.NewServer(transport.Options{
		MaxFrameBytes:     cfg.MaxFrameBytes,
		Limits:            transport.Limits{MaxDataBytes: cfg.MaxDataBytes},
		Outbox:            transport.OutboxLimits{MaxFrames: cfg.OutboxMessages, MaxBytes: cfg.OutboxBytes, WriteTimeout: cfg.WriteTimeout},
		APIKey:            cfg.APIKey,
		ReadHeaderTimeout: 10 * time.Second,
	}, broker, broker, metrics, log)

	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "ws", "ws://"+ln.Addr().String()+"/ws", "api", cfg.APIKey != "")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-serveErr:
		return err
	case sig := <-signals:
		log.Info("shutting down", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := server.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	broker.CloseAll(ctx, transport.CloseServiceRestart, "server restarting")
	return nil
}
