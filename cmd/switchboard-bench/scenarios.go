package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// runScenarios measures W1–W3 against the broker and the raw hub in one
// run and prints a table with their ratio.
func runScenarios(args []string) error {
	fs := flag.NewFlagSet("scenarios", flag.ExitOnError)
	brokerBin := fs.String("broker-bin", "", "switchboard binary (default: beside this one)")
	serverCPU := fs.String("server-cpu", "1", "CPU the servers are pinned to (taskset); empty: not pinned")
	duration := fs.Duration("duration", 10*time.Second, "publishing time of each fan-out scenario")
	only := fs.String("only", "", "comma-separated scenarios to run (W1-20, W1, W2, W3, W4, W5-base, W5-slow, failover, rolling-restart, presence-burst, W4-replication); empty: all W scenarios")
	replicas := fs.Int("replicas", -1, "W4, failover, rolling-restart: pass --channel-replicas=N to every node; -1: do not pass the flag (the broker's default)")
	failoverAfter := fs.Duration("failover-after", 10*time.Second, "failover: load after the kill; rolling-restart: after the last restart (a quarter of it)")
	nodePortBase := fs.Int("node-port-base", 0, "W4: give the nodes the cluster ports N, N+1, N+2, so runs place channels and replicas alike (0: free ports, a new placement each run)")
	pairs := fs.Int("pairs", 8, "W4-replication: W4 runs with replication off and on, alternating")
	window := fs.Int("window", 32, "W2, W4: publications each publisher keeps in flight")
	nodeLogs := fs.String("node-logs", "", "W4, failover, rolling-restart: directory for the nodes' logs (default: discarded)")
	burst := defaultPresenceBurstConfig("")
	fs.IntVar(&burst.Users, "presence-users", burst.Users, "presence-burst: users joining the one presence channel")
	fs.DurationVar(&burst.Spread, "presence-spread", burst.Spread, "presence-burst: time over which the users connect")
	fs.IntVar(&burst.Limit, "presence-limit", burst.Limit, "presence-burst: limit of each presence page")
	fs.DurationVar(&burst.Timeout, "presence-timeout", burst.Timeout, "presence-burst: give up this long after the first dial")
	_ = fs.Parse(args)
	// The failover scenarios kill and restart processes and take a minute:
	// they run only when named; so does presence-burst, which has no raw
	// hub to compare with.
	namedOnly := map[string]bool{"failover": true, "rolling-restart": true, "presence-burst": true, "W4-replication": true}
	selected := func(name string) bool {
		return (*only == "" && !namedOnly[name]) || slices.Contains(strings.Split(*only, ","), name)
	}
	if *brokerBin == "" {
		self, _ := os.Executable()
		*brokerBin = filepath.Join(filepath.Dir(self), "switchboard")
	}
	if _, err := os.Stat(*brokerBin); err != nil {
		return fmt.Errorf("no broker binary at %s (go build -o bin/ ./cmd/switchboard, then --broker-bin bin/switchboard): %w", *brokerBin, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	type target struct {
		name string
		bin  string
		args func(addr string) []string
	}
	targets := []target{
		{"raw", self, func(addr string) []string { return []string{"hub", "--addr", addr} }},
		{"broker", *brokerBin, func(addr string) []string {
			return []string{"--addr", addr, "--rate-limit", "0", "--max-connections-per-user", "0", "--log-level", "warn"}
		}},
	}
	scenarios := []struct {
		name string
		cfg  fanoutConfig
	}{
		{"W1-20", fanoutConfig{Subscribers: 1000, Channels: 1, Publishers: 1, Rate: 20, Payload: 64, Duration: *duration}},
		{"W1", fanoutConfig{Subscribers: 1000, Channels: 1, Publishers: 1, Rate: 100, Payload: 64, Duration: *duration}},
		{"W2", fanoutConfig{Subscribers: 10000, Channels: 100, Publishers: 10, Rate: 0, Window: *window, Payload: 64, Duration: *duration}},
		// W5: as W1 with 1 KiB payloads, without and then with a subscriber that stops reading.
		{"W5-base", fanoutConfig{Subscribers: 1000, Channels: 1, Publishers: 1, Rate: 100, Payload: 1024, Duration: *duration}},
		{"W5-slow", fanoutConfig{Subscribers: 1000, Channels: 1, Publishers: 1, Rate: 100, Payload: 1024, Duration: *duration, Stalled: 1}},
	}
	results := map[string]map[string]fanoutResult{}
	idle := map[string]float64{}
	for _, t := range targets {
		results[t.name] = map[string]fanoutResult{}
		for _, sc := range scenarios {
			if !selected(sc.name) {
				continue
			}
			res, err := withServer(*serverCPU, t.bin, t.args, func(url string, pid int) (fanoutResult, error) {
				cfg := sc.cfg
				cfg.URL, cfg.ServerPID = url, pid
				return runFanout(context.Background(), cfg)
			})
			if err != nil {
				return fmt.Errorf("%s on %s: %w", sc.name, t.name, err)
			}
			printFanout(sc.name+" "+t.name, res)
			results[t.name][sc.name] = res
		}
		if selected("W3") {
			perConn, err := withServer(*serverCPU, t.bin, t.args, func(url string, pid int) (float64, error) {
				return runIdle(url, pid, 10000)
			})
			if err != nil {
				return fmt.Errorf("W3 on %s: %w", t.name, err)
			}
			fmt.Printf("W3 %s: %.1f KiB per idle connection\n", t.name, perConn/1024)
			idle[t.name] = perConn
		}
	}
	if len(results["broker"]) > 0 || len(idle) > 0 || selected("W4") {
		fmt.Println()
		fmt.Println("| scenario | figure | broker | raw hub | broker/raw |")
		fmt.Println("|---|---|---|---|---|")
	}
	for _, sc := range scenarios {
		b, okB := results["broker"][sc.name]
		r, okR := results["raw"][sc.name]
		if !okB || !okR {
			continue
		}
		if sc.cfg.Rate == 0 {
			fmt.Printf("| %s | deliveries/s | %.0f | %.0f | %.2f |\n", sc.name, b.DeliveriesPerSecond(), r.DeliveriesPerSecond(), b.DeliveriesPerSecond()/r.DeliveriesPerSecond())
		}
		fmt.Printf("| %s | p99 latency | %s | %s | %.2f |\n", sc.name, b.P99.Round(time.Microsecond), r.P99.Round(time.Microsecond), float64(b.P99)/float64(r.P99))
		fmt.Printf("| %s | lost / dup / reordered | %d / %d / %d | %d / %d / %d | |\n", sc.name, b.Lost, b.Duplicated, b.Reorders, r.Lost, r.Duplicated, r.Reorders)
		if sc.cfg.Stalled > 0 {
			fmt.Printf("| %s | server memory growth (peak) | %.1f MiB | %.1f MiB | |\n", sc.name,
				float64(b.RSSPeak-b.RSSBefore)/(1<<20), float64(r.RSSPeak-r.RSSBefore)/(1<<20))
		}
	}
	if selected("W4") {
		cfg := scenarios[2].cfg // W2
		res, nodes, err := runW4(w4Options{cpu: *serverCPU, brokerBin: *brokerBin, replicas: *replicas, logDir: *nodeLogs, nodePortBase: *nodePortBase}, cfg)
		if err != nil {
			return fmt.Errorf("W4: %w", err)
		}
		printFanout(fmt.Sprintf("W4 broker (3 nodes, replicas: %s)", replicasLabel(*replicas)), res)
		if single, ok := results["broker"]["W2"]; ok {
			fmt.Printf("| W4 | deliveries/s, 3 nodes vs 1 | %.0f | %.0f (W2) | %.2f |\n", res.DeliveriesPerSecond(), single.DeliveriesPerSecond(),
				res.DeliveriesPerSecond()/single.DeliveriesPerSecond())
		} else {
			fmt.Printf("| W4 | deliveries/s, 3 nodes (W2 not run) | %.0f | | |\n", res.DeliveriesPerSecond())
		}
		fmt.Printf("| W4 | nodes' CPU time from publishing to drained, per publication | %s, %.1f µs | | |\n",
			nodes.CPU.Round(10*time.Millisecond), nodes.cpuPerPublication(res.Published))
		fmt.Printf("| W4 | network crossings per publication (2 other nodes with subscribers) | %.2f | | |\n", nodes.Crossings/float64(res.Published))
		fmt.Printf("| W4 | frames per write to a client socket | %.2f | | |\n", nodes.framesPerWrite())
		fmt.Printf("| W4 | writes cut short by a full socket | %.0f of %.0f | | |\n", nodes.FullSocketWrites, nodes.SocketWrites)
		fmt.Printf("| W4 | lost / dup / reordered | %d / %d / %d | | |\n", res.Lost, res.Duplicated, res.Reorders)
	}
	if selected("W4-replication") {
		fmt.Println()
		opts := w4Options{cpu: *serverCPU, brokerBin: *brokerBin, logDir: *nodeLogs, nodePortBase: *nodePortBase}
		if err := runReplicationCost(opts, scenarios[2].cfg, max(*pairs, 1)); err != nil {
			return fmt.Errorf("W4-replication: %w", err)
		}
	}
	if b, ok := results["broker"]["W5-slow"]; ok {
		base := results["broker"]["W5-base"]
		fmt.Printf("| W5 | others' deliveries/s with a stalled subscriber vs without | %.0f vs %.0f | | %.3f |\n",
			b.DeliveriesPerSecond(), base.DeliveriesPerSecond(), b.DeliveriesPerSecond()/base.DeliveriesPerSecond())
	}
	if b, ok := idle["broker"]; ok {
		fmt.Printf("| W3 | KiB per idle connection | %.1f | %.1f | %.2f |\n", b/1024, idle["raw"]/1024, b/idle["raw"])
	}
	if selected("presence-burst") {
		// Default broker flags: the default limits (control frames 50/s,
		// burst 500; no per-IP limit) let every well-behaved member in.
		args := func(addr string) []string { return []string{"--addr", addr, "--log-level", "warn"} }
		res, err := withServer(*serverCPU, *brokerBin, args, func(url string, pid int) (presenceBurstResult, error) {
			cfg := burst
			cfg.URL, cfg.ServerPID = url, pid
			return runPresenceBurst(cfg)
		})
		if err != nil {
			return fmt.Errorf("presence-burst: %w", err)
		}
		printPresenceBurst("presence-burst", burst, res)
	}
	if selected("failover") {
		if err := runFailover(defaultFailoverConfig(*brokerBin, *serverCPU, *replicas, *failoverAfter, *nodeLogs)); err != nil {
			return fmt.Errorf("failover: %w", err)
		}
	}
	if selected("rolling-restart") {
		cfg := defaultFailoverConfig(*brokerBin, *serverCPU, *replicas, *failoverAfter/4, *nodeLogs)
		if err := runRollingRestart(cfg); err != nil {
			return fmt.Errorf("rolling-restart: %w", err)
		}
	}
	return nil
}

// withServer starts a target on a free loopback port, runs f, stops it.
func withServer[T any](cpu, bin string, args func(string) []string, f func(url string, pid int) (T, error)) (T, error) {
	var zero T
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return zero, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd, err := startServer(cpu, bin, args(addr)...)
	if err != nil {
		return zero, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return zero, fmt.Errorf("%s did not start listening", bin)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f("ws://"+addr+"/ws", serverPID(cmd))
}

// serverPID is the server's own PID, also when taskset started it (taskset execs).
func serverPID(cmd *exec.Cmd) int { return cmd.Process.Pid }
