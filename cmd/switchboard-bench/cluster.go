package main

import (
	"context"
	"fmt"
	"io"
	"net"
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

// runW4 is W2 spread over a three-node cluster sharing the server core:
// clients go evenly to the nodes, and the nodes' metrics show how often a
// publication crossed the network. replicas ≥ 0 is passed to every node as
// --channel-replicas; -1 passes nothing (the broker's default).
// logDir, when set, keeps each node's stderr as logDir/W4-node<i>.log.
func runW4(cpu, brokerBin string, replicas int, logDir string, cfg fanoutConfig) (fanoutResult, float64, error) {
	dir, err := os.MkdirTemp("", "bench-etcd")
	if err != nil {
		return fanoutResult{}, 0, err
	}
	defer os.RemoveAll(dir)
	etcd, err := cluster.StartEmbeddedEtcd(dir, freeAddr(), freeAddr())
	if err != nil {
		return fanoutResult{}, 0, err
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
	args := []string{"--cluster-etcd", etcd.Endpoint, "--node-addr", "127.0.0.1:0", "--rate-limit", "0", "--log-level", "warn"}
	if replicas >= 0 {
		args = append(args, fmt.Sprintf("--channel-replicas=%d", replicas))
	}
	for i := range 3 {
		addr := freeAddr()
		cmd := serverCommand(cpu, brokerBin, append([]string{"--addr", addr}, args...)...)
		if logDir != "" {
			f, err := os.Create(filepath.Join(logDir, fmt.Sprintf("W4-node%d.log", i+1)))
			if err != nil {
				return fanoutResult{}, 0, err
			}
			defer f.Close()
			cmd.Stderr = f
		}
		if err := cmd.Start(); err != nil {
			return fanoutResult{}, 0, err
		}
		nodes = append(nodes, cmd)
		addrs = append(addrs, addr)
	}
	for _, addr := range addrs {
		if err := waitForMetric(addr, "switchboard_cluster_members", 3); err != nil {
			return fanoutResult{}, 0, err
		}
	}
	for _, addr := range addrs {
		cfg.URLs = append(cfg.URLs, "ws://"+addr+"/ws")
	}
	res, err := runFanout(context.Background(), cfg)
	if err != nil {
		return res, 0, err
	}
	crossings := 0.0
	for _, addr := range addrs {
		v, _ := metric(addr, "switchboard_remote_deliveries_total")
		crossings += v
	}
	return res, crossings, nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
