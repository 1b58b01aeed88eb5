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
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"
)

// Config says how this node joins its cluster.
type Config struct {
	// Name of the cluster; nodes only join members of the same name.
	Name string
	// NodeAddr is host:port for cluster traffic between nodes (port 0: any).
	NodeAddr string
	// AdvertiseHost is the host (or host:port) other nodes reach this one
	// at, when it differs from NodeAddr (e.g. NodeAddr binds 0.0.0.0).
	AdvertiseHost string
	// EtcdEndpoints, when set, make this node a member of a multi-node
	// cluster whose membership lives in etcd; empty: a single node.
	EtcdEndpoints []string
	// LeaseTTL is how long a dead node stays a member before etcd drops it.
	LeaseTTL time.Duration
	// RequestTimeout bounds grain calls.
	RequestTimeout time.Duration
	// Log receives protoactor's logs at or above LogLevel.
	Log      *slog.Logger
	LogLevel slog.Level
	// BeforeJoin runs once this node can send and receive, just before the
	// others learn of it: actors they will address by name (a relay) must
	// exist by then.
	BeforeJoin func(*Node) error
}

// Node is this process's cluster membership.
type Node struct {
	Cluster    *cluster.Cluster
	membership membership
	multiNode  bool
}

type membership interface {
	cluster.ClusterProvider
	Ready() bool
	Certain() bool
	Term() uint64
	Lost() <-chan struct{}
	Drain(context.Context) error
	Leave(context.Context) error
}

// MembersChanged is published on the actor system's event stream after
// every change of the member list, once protoactor holds the new topology.
// Grains are placed on the serving members only, by Placement.
type MembersChanged struct {
	// Term is the etcd revision of the member list.
	Term uint64
	// Serving are the members that own grains.
	Serving cluster.Members
	// Draining are members leaving that own nothing any more but whose
	// relays still answer, by address → member id.
	Draining map[string]string
}

// Ready reports whether the node is a member in good standing that
// follows the member list.
func (n *Node) Ready() bool { return n.membership.Ready() }

// Certain reports whether this node is surely still a member: while it
// is, no other node can have taken over the grains it owns. Grains
// sequence nothing while it is not.
func (n *Node) Certain() bool { return n.membership.Certain() }

// Term is the etcd revision of the member list in force on this node. It
// only grows, and two nodes holding the same term hold the same member
// list, so it orders grain activations placed under different lists.
func (n *Node) Term() uint64 { return n.membership.Term() }

// Lost is closed when this node has left the cluster without meaning to
// (its lease expired while it was paused or cut off). Other members will
// never take it back under its id: the process should close its clients
// with 1012 and exit, so a supervisor starts a fresh member.
func (n *Node) Lost() <-chan struct{} { return n.membership.Lost() }

// Drain makes this node own no grains any more while it stays reachable:
// the others place its grains elsewhere and take their state over.
func (n *Node) Drain(ctx context.Context) error { return n.membership.Drain(ctx) }

// Leave takes this node out of the cluster and waits, until ctx ends,
// until etcd has told the others; its grains move to other members while
// its clients are still connected.
func (n *Node) Leave(ctx context.Context) error { return n.membership.Leave(ctx) }

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
	// protoactor panics when remoting cannot listen; probe first for a
	// clear error. An advertised host needs the port other nodes dial, so
	// a node that advertises one takes a fixed port now rather than 0.
	if port != 0 || cfg.AdvertiseHost != "" {
		probe, err := net.Listen("tcp", cfg.NodeAddr)
		if err != nil {
			return nil, fmt.Errorf("node address %s: %w", cfg.NodeAddr, err)
		}
		port = probe.Addr().(*net.TCPAddr).Port
		_ = probe.Close()
	}
	advertised, err := advertisedAddress(cfg.AdvertiseHost, port)
	if err != nil {
		return nil, err
	}

	logger := slog.New(minLevel{cfg.Log.Handler(), cfg.LogLevel}).With("component", "protoactor")
	system := actor.NewActorSystemWithConfig(actor.Configure(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }),
	))
	remoteOptions := remoteLimits()
	if advertised != "" {
		remoteOptions = append(remoteOptions, remote.WithAdvertisedHost(advertised))
	}
	remoteConfig := remote.Configure(host, port, remoteOptions...)
	var provider membership = standalone{}
	if len(cfg.EtcdEndpoints) > 0 {
		provider = newEtcdMembership(cfg.EtcdEndpoints, cfg.Name, cfg.LeaseTTL, cfg.Log)
	}
	node = &Node{membership: provider, multiNode: len(cfg.EtcdEndpoints) > 0}
	if cfg.BeforeJoin != nil {
		provider = joinAfter{provider, func() error { return cfg.BeforeJoin(node) }}
	}
	// Rendezvous hashing (Placement) places each grain on one member with
	// no coordination beyond the member list; it needs no identity storage.
	clusterConfig := cluster.Configure(cfg.Name, provider, &identityLookup{}, remoteConfig,
		cluster.WithKinds(kinds...),
		cluster.WithRequestTimeout(cfg.RequestTimeout),
	)
	c := cluster.New(system, clusterConfig)
	node.Cluster = c

	defer func() {
		if r := recover(); r != nil {
			node = nil
			if cause, ok := r.(error); ok {
				err = fmt.Errorf("start cluster member: %w", cause)
			} else {
				err = fmt.Errorf("start cluster member: %v", r)
			}
			stopStarted(c)
		}
	}()
	c.StartMember()
	return node, nil
}

// stopStarted stops what protoactor started of a member that failed to
// join (its actors, gossip, remoting, freeing the node address); the
// remote itself may be what failed (its address was taken).
func stopStarted(c *cluster.Cluster) {
	defer func() { _ = recover() }()
	c.Shutdown(false)
}

// Stop leaves the cluster and stops every local actor.
func (n *Node) Stop() {
	if n.multiNode {
		// Leave etcd at once so the others re-home this node's grains now.
		if err := n.membership.Shutdown(true); err != nil {
			n.Cluster.Logger().Warn("leaving etcd", "err", err)
		}
	}
	// Not protoactor's graceful path: its remote shutdown races with
	// endpoint events, and membership is already handled above.
	n.Cluster.Shutdown(false)
}

// advertisedAddress is host:port for an advertised host given with or
// without its port; empty when nothing is advertised.
func advertisedAddress(advertise string, port int) (string, error) {
	if advertise == "" {
		return "", nil
	}
	if host, p, err := net.SplitHostPort(advertise); err == nil {
		if _, err := strconv.Atoi(p); err != nil || host == "" {
			return "", fmt.Errorf("advertised address %q: want a host or host:port", advertise)
		}
		return advertise, nil
	}
	if strings.ContainsAny(advertise, "/ ") {
		return "", fmt.Errorf("advertised address %q: want a host or host:port", advertise)
	}
	return net.JoinHostPort(strings.Trim(advertise, "[]"), strconv.Itoa(port)), nil
}

// joinAfter runs before, then joins.
type joinAfter struct {
	membership
	before func() error
}

func (j joinAfter) StartMember(c *cluster.Cluster) error {
	p, prepares := j.membership.(preparing)
	if prepares {
		// A node the cluster refuses starts nothing of its own.
		if err := p.prepare(); err != nil {
			return err
		}
	}
	if err := j.before(); err != nil {
		if prepares {
			p.close() // a failed start is not shut down gracefully
		}
		return err
	}
	return j.membership.StartMember(c)
}

// preparing is a membership that connects before the node joins, and
// closes that connection if the node then fails to start.
type preparing interface {
	prepare() error
	close()
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
	c.ActorSystem.EventStream.Publish(&MembersChanged{Term: 1, Serving: c.MemberList.Members().Members()})
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

func (standalone) Ready() bool                 { return true }
func (standalone) Certain() bool               { return true }
func (standalone) Term() uint64                { return 1 }
func (standalone) Lost() <-chan struct{}       { return nil }
func (standalone) Leave(context.Context) error { return nil }
func (standalone) Drain(context.Context) error { return nil }
