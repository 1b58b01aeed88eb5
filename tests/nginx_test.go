package tests

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nginx runs the shipped docs/nginx.conf, pointed at the given nodes.
func startNginx(t *testing.T, nodes []*server) string {
	t.Helper()
	binary, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx is not installed; ./tests/run installs it")
		}
		t.Skip("nginx is not installed (./tests/run installs Debian's package)")
	}
	shipped, err := os.ReadFile("../docs/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	var servers strings.Builder
	for _, n := range nodes {
		servers.WriteString("        server " + n.addr + ";\n")
	}
	addr := freeAddr(t)
	conf := regexp.MustCompile(`(?m)^\s+server 127\.0\.0\.1:\d+;\n`).ReplaceAllString(string(shipped), "")
	conf = strings.Replace(conf, "least_conn;\n", "least_conn;\n"+servers.String(), 1)
	conf = regexp.MustCompile(`listen \d+;`).ReplaceAllString(conf, "listen "+addr+";")
	dir := t.TempDir()
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"),
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	out, _ := os.Create(filepath.Join(dir, "out.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	eventually(t, 10*time.Second, "nginx to serve /healthz", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return addr
}

func TestClusterBehindNginx(t *testing.T) {
	t.Parallel()
	etcd := startEtcd(t)
	nodes := startCluster(t, etcd, 2, "--trusted-proxies", "127.0.0.1/32", "--max-connections-per-ip", "100")
	proxy := &server{t: t, addr: startNginx(t, nodes)}

	// Clients through nginx land on both nodes and still form one broker.
	var clients []*client
	for i := range 6 {
		c := proxy.dial(t, "user=guest"+string(rune('a'+i)), nil, true)
		c.expect("welcome")
		c.subscribe("hall:1")
		clients = append(clients, c)
	}
	for _, n := range nodes {
		if n.metric(t, "switchboard_connections") == 0 {
			t.Fatalf("nginx sent no client to %s", n.addr)
		}
	}
	clients[0].sendJSON(map[string]any{"type": "message", "channel": "hall:1", "data": "through nginx"})
	for _, c := range clients {
		if m := c.expect("message"); m["data"] != "through nginx" {
			t.Fatalf("got %v", m)
		}
	}
	clients[1].sendJSON(map[string]any{"type": "ping", "id": 1})
	clients[1].expect("pong")
}
