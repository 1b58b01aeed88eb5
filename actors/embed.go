package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	sbcluster "github.com/switchboard/switchboard/cluster"
	"github.com/switchboard/switchboard/transport"
)

// Switchboard is a running node, as Start returns it: the client listener,
// its cluster membership, the broker's actors and the HTTP/WebSocket
// server. cmd/switchboard is one; tests and programs that embed the broker
// start others the same way.
type Switchboard struct {
	cfg      Config
	log      *slog.Logger
	listener net.Listener
	node     *sbcluster.Node
	broker   *Broker
	server   *transport.Server

	stopWatchingStanding context.CancelFunc
	ready                chan struct{}
	errs                 chan error
	closing              chan struct{}
	closeOnce            sync.Once
	closeErr             error
}

// ErrLeftCluster is sent on Err when this node lost its etcd lease while
// it meant to stay: its peers will never take its member id back, so the
// process should Close and exit, and its supervisor start a fresh member.
var ErrLeftCluster = errors.New("left the cluster (its etcd lease expired); restart it to join as a new member")

// Start listens on cfg.Addr, makes this process a cluster member (a single
// node, or a member of the cluster in etcd when cfg.ClusterEtcd is set),
// starts the broker and serves clients; it returns once all of that runs.
// Zero fields of cfg take NewConfig's defaults (see Config). Call Close to
// stop the node.
func Start(cfg Config) (*Switchboard, error) {
	cfg = cfg.withDefaults()
	parsed, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	log := cfg.logger(parsed.logLevel)

	authConfig, err := cfg.authConfig()
	if err != nil {
		return nil, err
	}
	auth, err := transport.NewAuthenticator(authConfig)
	if err != nil {
		return nil, fmt.Errorf("authentication keys: %w", err)
	}
	if auth == nil {
		log.Warn("no JWT key configured: running in open development mode, clients choose their user id")
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	metrics := transport.NewMetrics()
	broker := NewBroker(Options{
		RequestTimeout:        cfg.RequestTimeout,
		GrainIdleTimeout:      cfg.GrainIdleTimeout,
		MaxSubscriptions:      cfg.MaxSubscriptions,
		MaxConnectionsPerUser: cfg.MaxConnsPerUser,
		Namespaces:            parsed.namespaces,
		ChannelReplicas:       cfg.ChannelReplicas,
		LookupRate:            cfg.LookupRate,
		LookupBurst:           cfg.LookupBurst,
		MemberLossDetection:   memberLossDetection(cfg),
	}, metrics, log)
	node, err := sbcluster.Start(sbcluster.Config{
		Name:           cfg.ClusterName,
		NodeAddr:       cfg.NodeAddr,
		AdvertiseHost:  cfg.NodeAdvertise,
		EtcdEndpoints:  splitList(cfg.ClusterEtcd),
		LeaseTTL:       cfg.ClusterLeaseTTL,
		RequestTimeout: cfg.RequestTimeout,
		Log:            log,
		LogLevel:       parsed.clusterLogLevel,
		BeforeJoin:     func(n *sbcluster.Node) error { return broker.Start(n.Cluster, n) },
	}, broker.Kinds())
	if err != nil {
		_ = ln.Close()
		return nil, err
	}

	server := transport.NewServer(transport.Options{
		MaxFrameBytes:     cfg.MaxFrameBytes,
		Limits:            transport.Limits{MaxDataBytes: cfg.MaxDataBytes, MaxChannelBytes: cfg.MaxChannelBytes, MaxInfoBytes: cfg.MaxInfoBytes},
		Outbox:            transport.OutboxLimits{MaxFrames: cfg.OutboxMessages, MaxBytes: cfg.OutboxBytes, WriteTimeout: cfg.WriteTimeout},
		APIKey:            cfg.APIKey,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		Auth:              auth,
		AuthTimeout:       cfg.AuthTimeout,
		DefaultSubscribe:  transport.ParsePatterns(cfg.SubscribeDefault),
		DefaultPublish:    transport.ParsePatterns(cfg.PublishDefault),
		DenySubscribe:     transport.ParsePatterns(cfg.SubscribeDeny),
		DenyPublish:       transport.ParsePatterns(cfg.PublishDeny),
		DefaultSend:       transport.ParsePatterns(cfg.SendDefault),
		DenySend:          transport.ParsePatterns(cfg.SendDeny),
		RateLimit:         cfg.RateLimit,
		RateBurst:         cfg.RateBurst,
		ControlRateLimit:  cfg.ControlRateLimit,
		ControlRateBurst:  cfg.ControlRateBurst,
		RateDisconnect:    cfg.RateLimitPolicy == "disconnect",
		UserRateLimit:     cfg.UserRateLimit,
		UserRateBurst:     cfg.UserRateBurst,
		MaxConnsPerIP:     cfg.MaxConnsPerIP,
		AllowedOrigins:    splitList(cfg.AllowedOrigins),
		PingInterval:      cfg.PingInterval,
		IdleTimeout:       cfg.IdleTimeout,
		Ready:             node.Ready,
		TrustedProxies:    parsed.trustedProxies,
		Profiling:         cfg.Pprof,
	}, broker, broker, metrics, log)

	sb := &Switchboard{cfg: cfg, log: log, listener: ln, node: node, broker: broker, server: server,
		ready: make(chan struct{}), errs: make(chan error, 2), closing: make(chan struct{})}
	go func() {
		if err := server.Serve(ln); err != nil {
			sb.errs <- err
		}
	}()
	log.Info("listening", "addr", ln.Addr().String(), "ws", "ws://"+ln.Addr().String()+"/ws", "api", cfg.APIKey != "")

	uncertainCtx, stopWatchingStanding := context.WithCancel(context.Background())
	sb.stopWatchingStanding = stopWatchingStanding
	go broker.CloseClientsWhileUncertain(uncertainCtx, cfg.ClusterLeaseTTL, transport.CloseServiceRestart, "node cut off from the cluster")
	go sb.watchStanding()
	go sb.watchReady()
	return sb, nil
}

// watchStanding reports the loss of this node's membership on Err.
func (sb *Switchboard) watchStanding() {
	select {
	case <-sb.node.Lost():
		// Its peers will never take this member id back: close the clients
		// so they reconnect to members in good standing, and make way for a
		// fresh member.
		sb.errs <- ErrLeftCluster
	case <-sb.closing:
	}
}

// watchReady closes ready once the node is a member in good standing,
// when /readyz first answers 200: at once for a single node, once etcd
// confirmed the lease and the member list is followed for a cluster.
func (sb *Switchboard) watchReady() {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !sb.node.Ready() {
		select {
		case <-tick.C:
		case <-sb.closing:
			return
		}
	}
	close(sb.ready)
}

// Addr is the host:port clients connect to (ws://ADDR/ws), with the port
// the listener got when Config.Addr asked for port 0.
func (sb *Switchboard) Addr() string { return sb.listener.Addr().String() }

// NodeAddr is the host:port other cluster members reach this node at.
func (sb *Switchboard) NodeAddr() string { return sb.node.Cluster.ActorSystem.Address() }

// Broker is the node's Go API for backends: publish, send to users,
// presence, disconnects.
func (sb *Switchboard) Broker() *Broker { return sb.broker }

// Log is the logger the node writes to.
func (sb *Switchboard) Log() *slog.Logger { return sb.log }

// Ready is closed once the node is a member in good standing and serves
// clients.
func (sb *Switchboard) Ready() <-chan struct{} { return sb.ready }

// Err receives the errors that end the node on their own: the server
// failing to accept, or ErrLeftCluster. Call Close after either.
func (sb *Switchboard) Err() <-chan error { return sb.errs }

// Close stops the node gracefully within Config.ShutdownTimeout (or
// until ctx ends): a cluster member hands its channels over and its
// clients reconnect elsewhere with 1012 once their publications in flight
// are answered; then it leaves. Calling it again returns the same result.
func (sb *Switchboard) Close(ctx context.Context) error {
	sb.closeOnce.Do(func() { sb.closeErr = sb.close(ctx) })
	return sb.closeErr
}

func (sb *Switchboard) close(ctx context.Context) error {
	close(sb.closing)
	defer sb.node.Stop()
	defer sb.stopWatchingStanding()
	ctx, cancel := context.WithTimeout(ctx, sb.cfg.ShutdownTimeout)
	defer cancel()
	if !sb.lost() {
		// Hand the channels over first, so they move with their history
		// while this node's clients are still served through them; then
		// close the clients while this node is still a member, so the
		// answers to their publications in flight reach them; then leave.
		if err := sb.node.Drain(ctx); err != nil {
			sb.log.Warn("draining", "err", err)
		} else {
			// Half the time at most: closing the clients and leaving need the rest.
			handOver, cancelHandOver := context.WithTimeout(ctx, sb.cfg.ShutdownTimeout/2)
			sb.broker.HandOverChannels(handOver)
			cancelHandOver()
		}
		// The rest of the time but a fifth (leaving needs little) lets the
		// clients' publications in flight be answered.
		deadline, _ := ctx.Deadline()
		closing, cancelClosing := context.WithDeadline(ctx, deadline.Add(-sb.cfg.ShutdownTimeout/5))
		sb.broker.CloseAll(closing, transport.CloseServiceRestart, "server restarting")
		cancelClosing()
		if err := sb.node.Leave(ctx); err != nil {
			sb.log.Warn("leaving the cluster", "err", err)
		}
	}
	if err := sb.server.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	sb.broker.CloseAll(ctx, transport.CloseServiceRestart, "server restarting")
	return nil
}

// lost reports whether this node has left the cluster without meaning
// to; it then hands nothing over, as its grains are already elsewhere.
func (sb *Switchboard) lost() bool {
	select {
	case <-sb.node.Lost():
		return true
	default:
		return false
	}
}

// memberLossDetection is how long a dead member stays one: its lease.
func memberLossDetection(cfg Config) time.Duration {
	if len(splitList(cfg.ClusterEtcd)) == 0 {
		return 0
	}
	return cfg.ClusterLeaseTTL
}
