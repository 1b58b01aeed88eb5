// Command switchboard-bench is the load generator: it measures the broker
// and, in the same run, a bare gws reference hub, so every figure can be
// given as a ratio to the fastest thing that could do the same job.
//
//	switchboard-bench scenarios [--broker-bin PATH]   # W1–W3, broker and raw hub, as a table
//	switchboard-bench scenarios --only failover,rolling-restart [--replicas N]   # issue #14: a node killed, nodes restarted
//	switchboard-bench scenarios --only presence-burst [--presence-limit L]   # issue #13: 1,000 users join one presence channel
//	switchboard-bench fanout --url ws://… [--subscribers N …]
//	switchboard-bench idle --url ws://… --server-pid PID --connections N
//	switchboard-bench hub --addr 127.0.0.1:9000        # the reference hub alone
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

func main() {
	raiseFileLimit()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: switchboard-bench scenarios|fanout|idle|hub [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "hub":
		fs := flag.NewFlagSet("hub", flag.ExitOnError)
		addr := fs.String("addr", "127.0.0.1:9000", "listen address")
		_ = fs.Parse(os.Args[2:])
		err = newRawHub().serve(*addr)
	case "fanout":
		cfg := fanoutConfig{}
		fs := flag.NewFlagSet("fanout", flag.ExitOnError)
		fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8765/ws", "WebSocket URL of the target")
		fs.IntVar(&cfg.Subscribers, "subscribers", 1000, "subscriber connections")
		fs.IntVar(&cfg.Channels, "channels", 1, "channels the subscribers spread over")
		fs.IntVar(&cfg.Publishers, "publishers", 1, "publisher connections")
		fs.Float64Var(&cfg.Rate, "rate", 100, "publications a second per publisher (0: flat out)")
		fs.IntVar(&cfg.Window, "window", 64, "publications in flight per publisher when flat out")
		fs.IntVar(&cfg.Payload, "payload", 64, "payload bytes")
		fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish")
		_ = fs.Parse(os.Args[2:])
		var res fanoutResult
		res, err = runFanout(context.Background(), cfg)
		if err == nil {
			printFanout("fanout", res)
		}
	case "idle":
		fs := flag.NewFlagSet("idle", flag.ExitOnError)
		url := fs.String("url", "ws://127.0.0.1:8765/ws", "WebSocket URL of the target")
		pid := fs.Int("server-pid", 0, "PID of the server, to read its resident memory")
		n := fs.Int("connections", 10000, "idle connections")
		_ = fs.Parse(os.Args[2:])
		var perConn float64
		perConn, err = runIdle(*url, *pid, *n)
		if err == nil {
			fmt.Printf("idle: %d connections, %.1f KiB resident per connection\n", *n, perConn/1024)
		}
	case "scenarios":
		err = runScenarios(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchboard-bench:", err)
		os.Exit(1)
	}
}

func printFanout(name string, r fanoutResult) {
	fmt.Printf("%s: setup %s, %d published, %d delivered, %.0f deliveries/s, latency p50 %s p90 %s p99 %s max %s, lost %d dup %d reordered %d\n",
		name, r.Setup.Round(time.Millisecond), r.Published, r.Delivered, r.DeliveriesPerSecond(),
		r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond),
		r.Lost, r.Duplicated, r.Reorders)
	if r.Refused > 0 || r.ClosedEarly > 0 {
		fmt.Printf("%s: %d publications answered with an error (first: %s), %d connections closed by the server before the end\n",
			name, r.Refused, r.FirstError, r.ClosedEarly)
	}
}

// residentBytes reads VmRSS of a process.
func residentBytes(pid int) (int64, error) {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}

// startServer runs a target as a child pinned to cpu (when taskset exists).
func startServer(cpu string, bin string, args ...string) (*exec.Cmd, error) {
	cmd := serverCommand(cpu, bin, args...)
	return cmd, cmd.Start()
}

// serverCommand is the command that runs bin pinned to cpu (when taskset
// exists and cpu is not empty); its output is discarded unless set.
func serverCommand(cpu string, bin string, args ...string) *exec.Cmd {
	cmdline := append([]string{bin}, args...)
	if path, err := exec.LookPath("taskset"); err == nil && cpu != "" {
		cmdline = append([]string{path, "-c", cpu}, cmdline...)
	}
	return exec.Command(cmdline[0], cmdline[1:]...)
}
