package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchboard/switchboard/cluster"
)

// w4Options are how W4 starts its nodes.
type w4Options struct {
	cpu, brokerBin string
	// replicas ≥ 0 is passed to every node as --channel-replicas; -1
	// passes nothing (the broker's default).
	replicas int
	// logDir, when set, keeps each node's stderr as logDir/W4-node<i>.log.
	logDir string
	// nodePortBase, when set, gives the nodes the cluster ports base,
	// base+1, base+2. Channels are placed by hashing those addresses, so
	// runs with the same base place every channel and replica alike.
	nodePortBase int
}

// runW4 is W2 spread over a three-node cluster sharing the server core:
// clients go evenly to the nodes, and the nodes' metrics show how often a
// publication crossed the network.
func runW4(opts w4Options, cfg fanoutConfig) (fanoutResult, nodeFigures, error) {
	dir, err := os.MkdirTemp("", "bench-etcd")
	if err != nil {
		return fanoutResult{}, nodeFigures{}, err
	}
	defer os.RemoveAll(dir)
	etcd, err := cluster.StartEmbeddedEtcd(dir, freeAddr(), freeAddr())
	if err != nil {
		return fanoutResult{}, nodeFigures{}, err
	}
	defer etcd.Stop()
	var addrs []string
	var nodes []*exec.Cmd
	defer func() {
		for _, n := range nodes {
			_ = n.Process.Signal(syscall.SIGTERM)
			_ = n.Wait()
		}
	}()
	args := []string{"--cluster-etcd", etcd.Endpoint, "--rate-limit", "0", "--log-level", "warn"}
	if opts.replicas >= 0 {
		args = append(args, fmt.Sprintf("--channel-replicas=%d", opts.replicas))
	}
	for i := range 3 {
		addr := freeAddr()
		nodeAddr := "127.0.0.1:0"
		if opts.nodePortBase > 0 {
			nodeAddr = fmt.Sprintf("127.0.0.1:%d", opts.nodePortBase+i)
		}
		cmd := serverCommand(opts.cpu, opts.brokerBin, append([]string{"--addr", addr, "--node-addr", nodeAddr}, args...)...)
		if opts.logDir != "" {
			f, err := os.Create(filepath.Join(opts.logDir, fmt.Sprintf("W4-node%d.log", i+1)))
			if err != nil {
				return fanoutResult{}, nodeFigures{}, err
			}
			defer f.Close()
			cmd.Stderr = f
		}
		if err := cmd.Start(); err != nil {
			return fanoutResult{}, nodeFigures{}, err
		}
		nodes = append(nodes, cmd)
		addrs = append(addrs, addr)
	}
	for _, addr := range addrs {
		if err := waitForMetric(addr, "switchboard_cluster_members", 3); err != nil {
			return fanoutResult{}, nodeFigures{}, err
		}
	}
	for _, addr := range addrs {
		cfg.URLs = append(cfg.URLs, "ws://"+addr+"/ws")
	}
	nodesCPU := func() time.Duration {
		var total time.Duration
		for _, n := range nodes {
			c, _ := processCPU(n.Process.Pid)
			total += c
		}
		return total
	}
	var cpuBefore, used time.Duration
	cfg.Mark = func(phase string) {
		switch phase {
		case "publishing":
			cpuBefore = nodesCPU()
		case "drained":
			used = nodesCPU() - cpuBefore
		}
	}
	res, err := runFanout(context.Background(), cfg)
	if err != nil {
		return res, nodeFigures{}, err
	}
	figures := nodeFigures{CPU: used}
	for _, addr := range addrs {
		v, _ := metric(addr, "switchboard_remote_deliveries_total")
		figures.Crossings += v
		v, _ = metric(addr, "switchboard_messages_out_total")
		figures.FramesOut += v
		v, _ = metric(addr, "switchboard_socket_writes_total")
		figures.SocketWrites += v
		v, _ = metric(addr, "switchboard_full_socket_writes_total")
		figures.FullSocketWrites += v
	}
	return res, figures, nil
}

// nodeFigures are what W4's three nodes report of a run, summed over them.
type nodeFigures struct {
	// CPU is the time the nodes used from the start of publishing until
	// the deliveries drained, less sensitive than throughput to other work
	// on the machine.
	CPU time.Duration
	// Crossings counts publications sent to relays on other nodes.
	Crossings float64
	// FramesOut / SocketWrites is how many frames a write to a client
	// socket carried: the coalescing that makes a delivery cheap.
	FramesOut, SocketWrites float64
	// FullSocketWrites were cut short by a client that read too slowly.
	FullSocketWrites float64
}

// cpuPerPublication is CPU in microseconds for each of published.
func (n nodeFigures) cpuPerPublication(published int64) float64 {
	return float64(n.CPU.Microseconds()) / float64(max(published, 1))
}

func (n nodeFigures) framesPerWrite() float64 { return n.FramesOut / max(n.SocketWrites, 1) }

// processCPU is the user and system CPU time a process has used, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func processCPU(pid int) (time.Duration, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from after it.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	fields := strings.Fields(rest)
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

func freeAddr() string {
	addr, err := cluster.FreeLoopbackAddr()
	if err != nil {
		panic(err)
	}
	return addr
}

func metric(addr, name string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

func waitForMetric(addr, name string, want float64) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if v, err := metric(addr, name); err == nil && v == want {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: %s never reached %v", addr, name, want)
}
