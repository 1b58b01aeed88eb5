// Command switchboard runs the Switchboard real-time message broker.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboard/switchboard/actors"
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

// run starts the broker and stops it gracefully on SIGINT or SIGTERM, or
// when it fails on its own.
func run(cfg actors.Config) error {
	sb, err := actors.Start(cfg)
	if err != nil {
		return err
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	var failed error
	select {
	case failed = <-sb.Err():
	case sig := <-signals:
		sb.Log().Info("shutting down", "signal", sig.String())
	}
	if err := sb.Close(context.Background()); err != nil {
		return err
	}
	return failed
}
