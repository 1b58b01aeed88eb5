// Package cluster starts this process as a member of a protoactor cluster:
// remoting, the identity lookup that places channel and session grains,
// and the membership provider. A single node is a one-member cluster, so
// the broker has one code path however many nodes there are.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
)

// Config says how this node joins its cluster.
type Config struct {
	// Name of the cluster; nodes only join members of the same name.
	Name string
	// NodeAddr is host:port for cluster traffic between nodes (port 0: any).
	NodeAddr string
	// RequestTimeout bounds grain calls.
	RequestTimeout time.Duration
	// Log receives protoactor's logs at or above LogLevel.
	Log      *slog.Logger
	LogLevel slog.Level
}

// Node is this process's cluster membership.
type Node struct {
	Cluster *cluster.Cluster
	System  *actor.ActorSystem
}

// Start makes this process a cluster member hosting kinds.
func Start(cfg Config, kinds []*cluster.Kind) (node *Node, err error) {
	host, portText, err := net.SplitHostPort(cfg.NodeAddr)
	if err != nil {
		return nil, fmt.Errorf("node address %q: %w", cfg.NodeAddr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("node address %q: bad port", cfg.NodeAddr)
	}
	// protoactor panics when remoting cannot listen; probe first for a clear error.
	if port != 0 {
		probe, err := net.Listen("tcp", cfg.NodeAddr)
		if err != nil {
			return nil, fmt.Errorf("node address %s: %w", cfg.NodeAddr, err)
		}
		_ = probe.Close()
	}

	logger := slog.New(minLevel{cfg.Log.Handler(), cfg.LogLevel}).With("component", "protoactor")
	system := actor.NewActorSystemWithConfig(actor.Configure(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }),
	))
	remoteConfig := remote.Configure(host, port)
	clusterConfig := cluster.Configure(cfg.Name, standalone{}, disthash.New(), remoteConfig,
		cluster.WithKinds(kinds...),
		cluster.WithRequestTimeout(cfg.RequestTimeout),
	)
	c := cluster.New(system, clusterConfig)

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("start cluster member: %v", r)
		}
	}()
	c.StartMember()
	return &Node{Cluster: c, System: system}, nil
}

// Stop leaves the cluster and stops every local actor.
func (n *Node) Stop() {
	n.Cluster.Shutdown(false)
}

// standalone is the membership of a one-node cluster: only itself.
type standalone struct{}

func (standalone) StartMember(c *cluster.Cluster) error {
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return err
	}
	c.MemberList.UpdateClusterTopology(cluster.Members{{
		Id:    c.ActorSystem.ID,
		Host:  host,
		Port:  int32(port),
		Kinds: c.GetClusterKinds(),
	}})
	return nil
}

func (standalone) StartClient(*cluster.Cluster) error {
	return fmt.Errorf("a standalone node has no clients")
}
func (standalone) Shutdown(bool) error { return nil }

// minLevel drops records below a floor, to keep protoactor's chatter out
// of the broker's log unless asked for.
type minLevel struct {
	slog.Handler
	floor slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.floor && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.floor}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.floor}
}
