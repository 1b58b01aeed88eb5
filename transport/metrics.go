package transport

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the broker's Prometheus series, on a registry of their own so
// that several brokers can live in one process (tests do).
type Metrics struct {
	Registry *prometheus.Registry

	Connections        prometheus.Gauge
	Actors             *prometheus.GaugeVec
	Subscriptions      prometheus.Gauge
	MessagesIn         prometheus.Counter
	FramesOut          prometheus.Counter
	Publications       prometheus.Counter
	Deliveries         prometheus.Counter
	SlowConsumerCloses prometheus.Counter
	ProtocolErrors     *prometheus.CounterVec
	ClusterMembers     prometheus.Gauge
	RemoteDeliveries   prometheus.Counter
	SocketWrites       prometheus.Counter
	FullSocketWrites   prometheus.Counter
	DeliveryGaps       prometheus.Counter
	StaleDeliveries    prometheus.Counter
	HandOvers          prometheus.Counter
	ReplicaSyncs       *prometheus.CounterVec
	GrainLookups       *prometheus.CounterVec
}

func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_connections", Help: "Open WebSocket connections."}),
		Actors: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchboard_actors", Help: "Live actors by kind (connection, channel, session)."},
			[]string{"kind"}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_subscriptions", Help: "Channel subscriptions held by channels on this node."}),
		MessagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_messages_in_total", Help: "Client frames received."}),
		FramesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_messages_out_total", Help: "Frames written to clients."}),
		Publications: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_publications_total", Help: "Publications sequenced by channels on this node."}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_deliveries_total", Help: "Publications queued to subscriber connections on this node."}),
		SlowConsumerCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_slow_consumer_closes_total", Help: "Connections closed because their outbox overflowed."}),
		ProtocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_protocol_errors_total", Help: "Client frames refused, by error code."},
			[]string{"code"}),
		ClusterMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_cluster_members", Help: "Cluster members this node knows of, itself included."}),
		RemoteDeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_remote_deliveries_total", Help: "Publications sent by channels on this node to relays on other nodes."}),
		SocketWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_socket_writes_total", Help: "Write system calls to client sockets; messages_out / socket_writes is the frames each write carries."}),
		FullSocketWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_full_socket_writes_total", Help: "Writes to client sockets cut short because the socket's buffer was full (the client reads slower than it is sent to); the rest waits on a goroutine of its own."}),
		DeliveryGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_delivery_gaps_total", Help: "Times a channel's publications reached this node with offsets missing or under a new epoch; its local subscribers were sent a gap frame."}),
		StaleDeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_stale_deliveries_total", Help: "Publications dropped by this node's relay because a newer activation of their channel had announced itself."}),
		HandOvers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_channel_handovers_total", Help: "Channels activated on this node that took over the state (epoch, offset, history) of their previous activation."}),
		ReplicaSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_replica_syncs_total", Help: "Times a channel on this node sent a replica its whole state, by reason: new (the replica just became one), refused (it lacked what an update built on), stuck (it confirmed nothing for a second while a publication waited), settings (the channel's settings changed)."},
			[]string{"reason"}),
		GrainLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_grain_lookups_total", Help: "Lookups of channels and sessions this node had no address for (each may activate the grain), by result: started, or refused over --lookup-rate-limit."},
			[]string{"result"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Connections, m.Actors, m.Subscriptions, m.MessagesIn, m.FramesOut,
		m.Publications, m.Deliveries, m.SlowConsumerCloses, m.ProtocolErrors,
		m.ClusterMembers, m.RemoteDeliveries, m.SocketWrites, m.FullSocketWrites, m.DeliveryGaps, m.StaleDeliveries, m.HandOvers,
		m.ReplicaSyncs, m.GrainLookups,
	)
	return m
}
