package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

	"github.com/switchboard/switchboard/cluster"
)

// devClusterCommand starts an embedded etcd and N broker nodes as child
// processes on loopback, for trying the cluster on one machine:
// switchboard dev-cluster --nodes 3 [-- extra broker flags]
func devClusterCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("switchboard dev-cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := fs.Int("nodes", 3, "number of broker nodes")
	basePort := fs.Int("base-port", 8765, "WebSocket/HTTP port of the first node; the others follow")
	nodePort := fs.Int("node-port", 7001, "cluster port of the first node; the others follow")
	etcdPort := fs.Int("etcd-port", 2379, "etcd client port (the peer port is one above)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 1 || *nodes > 16 {
		return fmt.Errorf("dev-cluster: --nodes must be between 1 and 16")
	}
	dir, err := os.MkdirTemp("", "switchboard-etcd")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	etcd, err := cluster.StartEmbeddedEtcd(dir, "127.0.0.1:"+strconv.Itoa(*etcdPort), "127.0.0.1:"+strconv.Itoa(*etcdPort+1))
	if err != nil {
		return fmt.Errorf("dev-cluster: %w", err)
	}
	defer etcd.Stop()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "etcd at %s\n", etcd.Endpoint)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	var children []*exec.Cmd
	var wg sync.WaitGroup
	exited := make(chan struct{}, *nodes)
	for i := range *nodes {
		addr := "127.0.0.1:" + strconv.Itoa(*basePort+i)
		cmd := exec.Command(self, append([]string{
			"--addr", addr,
			"--node-addr", "127.0.0.1:" + strconv.Itoa(*nodePort+i),
			"--cluster-etcd", etcd.Endpoint,
		}, fs.Args()...)...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			for _, c := range children {
				_ = c.Process.Kill()
			}
			return fmt.Errorf("dev-cluster: start node %d: %w", i+1, err)
		}
		children = append(children, cmd)
		wg.Add(1)
		go func() { defer wg.Done(); _ = cmd.Wait(); exited <- struct{}{} }()
		fmt.Fprintf(stdout, "node %d: ws://%s/ws\n", i+1, addr)
	}
	select {
	case <-signals:
	case <-exited:
		fmt.Fprintln(stderr, "dev-cluster: a node exited; stopping the others")
	}
	for _, c := range children {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	wg.Wait()
	return nil
}
