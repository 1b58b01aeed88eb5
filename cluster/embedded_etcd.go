package cluster

import (
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// EmbeddedEtcd is a single-member etcd server inside this process, for
// the dev-cluster command and for tests: the real etcd, not a stand-in.
type EmbeddedEtcd struct {
	server *embed.Etcd
	once   sync.Once
	// Endpoint is the client URL nodes pass to --cluster-etcd.
	Endpoint string
}

// FreeLoopbackAddr is a loopback address whose port was free a moment
// ago: for an embedded etcd's URLs, and for tests that must name an
// address before the server that listens on it starts.
func FreeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// StartEmbeddedEtcd runs etcd with its data in dir, serving clients at
// clientAddr and peers at peerAddr (host:port each, on loopback).
func StartEmbeddedEtcd(dir, clientAddr, peerAddr string) (*EmbeddedEtcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "switchboard-dev"
	cfg.LogLevel = "panic" // its shutdown logs errors that are not; failures to start are returned
	cfg.Logger = "zap"
	clientURL, err := url.Parse("http://" + clientAddr)
	if err != nil {
		return nil, err
	}
	peerURL, err := url.Parse("http://" + peerAddr)
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	server, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-server.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		server.Close()
		return nil, fmt.Errorf("etcd did not become ready within 30s")
	}
	return &EmbeddedEtcd{server: server, Endpoint: clientURL.String()}, nil
}

// Stop shuts etcd down.
func (e *EmbeddedEtcd) Stop() { e.once.Do(e.server.Close) }
