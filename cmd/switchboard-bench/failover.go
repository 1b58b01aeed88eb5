package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard/switchboard/cluster"
)

// The failover and rolling-restart scenarios (issue #14): a three-node
// cluster under a steady publishing load, with subscribers on every node,
// while one node is SIGKILLed (failover) or every node in turn is stopped
// with SIGTERM and started again on the same ports (rolling-restart). They
// measure what clients see: how long publications stop, which
// acknowledged publications never arrive, duplicates, new epochs and how
// often a reconnecting subscriber recovers.

// failoverConfig is one run of either scenario.
type failoverConfig struct {
	Bin, CPU string
	// Replicas is passed to every node as --channel-replicas; -1 passes
	// nothing (brokers without the flag refuse it).
	Replicas           int
	Nodes              int
	Channels           int
	Rate               float64 // publications a second, all publishers together
	Publishers         int
	SubscribersPerNode int
	Warmup             time.Duration // load before the kill or the first restart
	After              time.Duration // load after the kill or the last restart
	Pause              time.Duration // rolling-restart: load between one node back and the next stopped
	Settle             time.Duration // longest wait for answers and deliveries after publishing stops
	LogDir             string        // nodes' stderr goes to LogDir/<scenario>-node<i>.log when set
}

func defaultFailoverConfig(bin, cpu string, replicas int, after time.Duration, logDir string) failoverConfig {
	return failoverConfig{Bin: bin, CPU: cpu, Replicas: replicas, Nodes: 3, Channels: 20, Rate: 200, Publishers: 6,
		SubscribersPerNode: 2, Warmup: 3 * time.Second, After: after, Pause: 2 * time.Second, Settle: 10 * time.Second,
		LogDir: logDir}
}

// benchNode is one broker process slot: its addresses stay when it restarts.
type benchNode struct {
	addr, nodeAddr string
	cmd            *exec.Cmd
	exited         chan struct{}
}

func (n *benchNode) running() bool { return n.exited != nil && !isClosedChan(n.exited) }

func isClosedChan(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// benchCluster is an embedded etcd and cfg.Nodes broker processes.
type benchCluster struct {
	cfg   failoverConfig
	name  string
	dir   string
	etcd  *cluster.EmbeddedEtcd
	nodes []*benchNode
}

func startBenchCluster(name string, cfg failoverConfig) (*benchCluster, error) {
	dir, err := os.MkdirTemp("", "bench-"+name)
	if err != nil {
		return nil, err
	}
	etcd, err := cluster.StartEmbeddedEtcd(dir, freeAddr(), freeAddr())
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &benchCluster{cfg: cfg, name: name, dir: dir, etcd: etcd}
	for i := range cfg.Nodes {
		c.nodes = append(c.nodes, &benchNode{addr: freeAddr(), nodeAddr: freeAddr()})
		if err := c.start(i); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := c.waitMembers(30 * time.Second); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *benchCluster) urls() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, "ws://"+n.addr+"/ws")
	}
	return out
}

// start runs node i on its addresses. The lease TTL is the system tests'
// (2 s), history lets subscribers recover, and rate limits are off.
func (c *benchCluster) start(i int) error {
	n := c.nodes[i]
	args := []string{"--addr", n.addr, "--node-addr", n.nodeAddr, "--cluster-etcd", c.etcd.Endpoint,
		"--cluster-lease-ttl", "2s", "--history-size", "1000", "--history-ttl", "5m",
		"--rate-limit", "0", "--log-level", "warn"}
	if c.cfg.Replicas >= 0 {
		args = append(args, fmt.Sprintf("--channel-replicas=%d", c.cfg.Replicas))
	}
	cmd := serverCommand(c.cfg.CPU, c.cfg.Bin, args...)
	var logFile *os.File
	if c.cfg.LogDir != "" {
		var err error
		logFile, err = os.OpenFile(filepath.Join(c.cfg.LogDir, fmt.Sprintf("%s-node%d.log", c.name, i+1)),
			os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		cmd.Stderr = logFile
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node %d: %w", i+1, err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited = cmd, exited
	go func() {
		_ = cmd.Wait()
		if logFile != nil {
			logFile.Close()
		}
		close(exited)
	}()
	return nil
}

// waitMembers waits until every running node counts every running node.
func (c *benchCluster) waitMembers(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		live := 0
		for _, n := range c.nodes {
			if n.running() {
				live++
			}
		}
		all := true
		for i, n := range c.nodes {
			if n.exited != nil && isClosedChan(n.exited) && n.cmd.ProcessState != nil && n.cmd.ProcessState.ExitCode() != -1 &&
				n.cmd.ProcessState.ExitCode() != 0 {
				hint := ""
				if c.cfg.Replicas >= 0 {
					hint = "; a broker without --channel-replicas refuses the flag: run with --replicas -1"
				}
				return fmt.Errorf("node %d exited with status %d (see its log with --node-logs%s)", i+1, n.cmd.ProcessState.ExitCode(), hint)
			}
			if !n.running() {
				continue
			}
			if v, err := metric(n.addr, "switchboard_cluster_members"); err != nil || v != float64(live) {
				all = false
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the nodes did not all count %d members within %s", live, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill SIGKILLs node i and waits for it to be gone.
func (c *benchCluster) kill(i int) {
	n := c.nodes[i]
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-n.exited:
	case <-time.After(5 * time.Second):
	}
}

// terminate sends SIGTERM to node i and waits for it to exit (SIGKILL
// after timeout); it returns how long that took and the exit status.
func (c *benchCluster) terminate(i int, timeout time.Duration) (time.Duration, int) {
	n := c.nodes[i]
	began := time.Now()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(timeout):
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.exited
	}
	return time.Since(began), n.cmd.ProcessState.ExitCode()
}

func (c *benchCluster) close() {
	for _, n := range c.nodes {
		if n.running() {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range c.nodes {
		if n.exited == nil {
			continue
		}
		select {
		case <-n.exited:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Signal(syscall.SIGKILL)
			<-n.exited
		}
	}
	c.etcd.Stop()
	os.RemoveAll(c.dir)
}

// owners publishes one probe to each channel through node 0 and names the
// node that sequenced it (its switchboard_publications_total grew).
func (c *benchCluster) owners(channels []string) (map[string]int, error) {
	acks := make(chan wireFrame, 1)
	prober, err := dialFrames(c.urls()[0], "prober", func(_ *wsConn, f wireFrame) { acks <- f })
	if err != nil {
		return nil, err
	}
	defer prober.close()
	owners := map[string]int{}
	for k, ch := range channels {
		before := make([]float64, len(c.nodes))
		for i, n := range c.nodes {
			before[i], _ = metric(n.addr, "switchboard_publications_total")
		}
		_ = prober.write(fmt.Sprintf(`{"type":"message","channel":%q,"data":"probe","id":%d}`, ch, k+1))
		select {
		case f := <-acks:
			if f.Type != "published" {
				return nil, fmt.Errorf("probe of %s: %s %s", ch, f.Type, f.Code)
			}
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("probe of %s: no answer", ch)
		}
		owners[ch] = -1
		for i, n := range c.nodes {
			if v, _ := metric(n.addr, "switchboard_publications_total"); v > before[i] {
				owners[ch] = i
			}
		}
	}
	return owners, nil
}

// failoverLoad is the clients of one run: SubscribersPerNode subscribers
// to every channel on each node, and publishers spread over the nodes.
type failoverLoad struct {
	ledger         *ledger
	pubs           []*failoverPublisher
	subs           []*failoverSubscriber
	stopPublishing context.CancelFunc
	stopSettling   context.CancelFunc
	stopSubs       context.CancelFunc
	pubsDone       sync.WaitGroup
	subsDone       sync.WaitGroup
}

func startFailoverLoad(cfg failoverConfig, urls, channels []string) (*failoverLoad, error) {
	l := &failoverLoad{ledger: newLedger()}
	for node := range urls {
		for k := range cfg.SubscribersPerNode {
			s := newSubscriber(fmt.Sprintf("sub%d-%d", node+1, k+1), urls, node, channels, l.ledger)
			if err := s.start(); err != nil {
				l.close()
				return nil, err
			}
			l.subs = append(l.subs, s)
		}
	}
	if !waitUntil(10*time.Second, func() bool {
		for _, s := range l.subs {
			if !s.subscribed() {
				return false
			}
		}
		return true
	}) {
		l.close()
		return nil, fmt.Errorf("subscribers were not subscribed to every channel within 10 s")
	}
	subsCtx, stopSubs := context.WithCancel(context.Background())
	l.stopSubs = stopSubs
	for _, s := range l.subs {
		l.subsDone.Add(1)
		go func() { defer l.subsDone.Done(); s.run(subsCtx) }()
	}
	for i := range cfg.Publishers {
		// Each publisher starts at another channel, so they do not move in step.
		rotated := append(append([]string{}, channels[i%len(channels):]...), channels[:i%len(channels)]...)
		p := &failoverPublisher{name: fmt.Sprintf("pub%d", i+1), urls: urls, node: i % len(urls), channels: rotated,
			ledger: l.ledger, pending: map[int64]*pendingPublish{}}
		if err := p.connect(context.Background(), true); err != nil {
			l.close()
			return nil, err
		}
		l.pubs = append(l.pubs, p)
	}
	publishing, stopPublishing := context.WithCancel(context.Background())
	settling, stopSettling := context.WithCancel(context.Background())
	l.stopPublishing, l.stopSettling = stopPublishing, stopSettling
	interval := time.Duration(float64(time.Second) * float64(cfg.Publishers) / cfg.Rate)
	for _, p := range l.pubs {
		l.pubsDone.Add(1)
		go func() { defer l.pubsDone.Done(); p.run(publishing, settling, interval) }()
	}
	return l, nil
}

// finish stops publishing, waits up to settle for the outstanding answers
// and then for the subscribers to receive every acknowledged publication
// (or for deliveries to stop for 2 s).
func (l *failoverLoad) finish(settle time.Duration) {
	deadline := time.Now().Add(settle)
	l.stopPublishing()
	done := make(chan struct{})
	go func() { l.pubsDone.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
	}
	l.stopSettling()
	<-done
	acked := map[string]bool{}
	for _, r := range l.ledger.snapshot() {
		if r.outcome == "published" {
			acked[r.key] = true
		}
	}
	lastTotal, quietSince := -1, time.Now()
	for time.Now().Before(deadline) {
		complete, total := true, 0
		for _, s := range l.subs {
			s.mu.Lock()
			for _, n := range s.seen {
				total += n
			}
			for key := range acked {
				if s.seen[key] == 0 {
					complete = false
				}
			}
			s.mu.Unlock()
		}
		if complete {
			break
		}
		if total != lastTotal {
			lastTotal, quietSince = total, time.Now()
		} else if time.Since(quietSince) > 2*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *failoverLoad) close() {
	if l.stopSubs != nil {
		l.stopSubs()
	}
	for _, s := range l.subs {
		s.close()
	}
	l.subsDone.Wait()
	for _, p := range l.pubs {
		p.close()
	}
}

func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// runFailover SIGKILLs the last node after cfg.Warmup of load and keeps
// the load on for cfg.After.
func runFailover(cfg failoverConfig) error {
	cl, err := startBenchCluster("failover", cfg)
	if err != nil {
		return err
	}
	defer cl.close()
	channels := make([]string, cfg.Channels)
	for i := range channels {
		channels[i] = fmt.Sprintf("failover:%d", i)
	}
	owners, err := cl.owners(channels)
	if err != nil {
		return err
	}
	victim := cfg.Nodes - 1
	load, err := startFailoverLoad(cfg, cl.urls(), channels)
	if err != nil {
		return err
	}
	defer load.close()
	time.Sleep(cfg.Warmup)
	killedAt := time.Now()
	cl.kill(victim)
	time.Sleep(cfg.After)
	publishEnd := time.Now()
	load.finish(cfg.Settle)
	affected := map[string]bool{}
	for ch, owner := range owners {
		affected[ch] = owner == victim
	}
	rep := analyze(load, affected, killedAt, publishEnd, func(s *failoverSubscriber) bool { return s.home == victim })
	printFailover(cfg, victim, rep)
	return nil
}

// runRollingRestart stops each node in turn with SIGTERM, waits for it to
// exit, starts it again on the same ports and waits until the cluster has
// every member again.
func runRollingRestart(cfg failoverConfig) error {
	cl, err := startBenchCluster("rolling", cfg)
	if err != nil {
		return err
	}
	defer cl.close()
	channels := make([]string, cfg.Channels)
	for i := range channels {
		channels[i] = fmt.Sprintf("rolling:%d", i)
	}
	load, err := startFailoverLoad(cfg, cl.urls(), channels)
	if err != nil {
		return err
	}
	defer load.close()
	time.Sleep(cfg.Warmup)
	began := time.Now()
	var steps []restartStep
	for i := range cl.nodes {
		took, code := cl.terminate(i, 20*time.Second)
		restarted := time.Now()
		if err := cl.start(i); err != nil {
			return err
		}
		if err := cl.waitMembers(30 * time.Second); err != nil {
			return fmt.Errorf("after restarting node %d: %w", i+1, err)
		}
		steps = append(steps, restartStep{node: i + 1, stop: took, status: code, rejoin: time.Since(restarted)})
		time.Sleep(cfg.Pause)
	}
	time.Sleep(cfg.After)
	publishEnd := time.Now()
	load.finish(cfg.Settle)
	affected := map[string]bool{}
	for _, ch := range channels {
		affected[ch] = true
	}
	rep := analyze(load, affected, began, publishEnd, func(*failoverSubscriber) bool { return true })
	printRollingRestart(cfg, steps, rep)
	return nil
}

type restartStep struct {
	node         int
	stop, rejoin time.Duration
	status       int
}
