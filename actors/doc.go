// Package actors holds the broker's behaviour and is where a node is
// assembled: one actor per client connection, a channel grain per channel
// (its subscribers and the order of its publications), a session grain per
// user (their live connections) and one relay per node that fans
// publications out to local sockets.
//
// A publication travels:
//
//  1. socket: the client's frame arrives on its WebSocket;
//  2. transport decodes it into a pb.ClientCommand and hands it to the
//     connection's inbox (socket.go);
//  3. the connection actor (connection.go) checks it and sends a
//     pb.Publish to the channel grain, without waiting for the answer;
//  4. the channel grain (channel.go) sequences it (the next offset of its
//     epoch), encodes its WebSocket frame once, keeps it in history,
//     replicates it to the members ranked next for the channel, if any
//     (channel_replication.go), and once they hold it delivers it and
//     answers the publisher (with one replica, the replica answers as it
//     stores the publication: a hop sooner);
//  5. the relay of each node with subscribers (relay.go) gets one
//     pb.Delivery and queues the same bytes on each local subscriber's
//     outbox;
//  6. the outboxes (transport.Outbox, behind the Outbox interface) write
//     them to the sockets.
//
// The files, by concept:
//
//   - broker.go: the Broker, its Options, Start and the member list in
//     force (updateMembers); asking every node's relay.
//   - grain_calls.go: calling a grain (request, tell), finding and
//     activating it (lookup, activate) through the cache of where grains
//     are.
//   - backend_api.go: the Go API for backends and the HTTP API
//     (transport.Backend: Publish, SendToUser, Broadcast, Subscribers,
//     Presence, SetChannelCapacity, ...).
//   - shutdown.go: closing this node's clients and handing its channels
//     over as it stops, or while it is unsure of its membership.
//   - socket.go: the seam with transport: the Outbox interface, Open and
//     the connection's inbox.
//   - connection.go, backlog.go: the connection actor and the commands
//     that may wait for it.
//   - local_connections.go: this node's connections and session watches.
//   - channel.go, channel_activation.go, channel_replication.go,
//     presence_events.go, retries.go, passivation.go: the channel grain,
//     how an activation takes over from the last, its replicas, its
//     coalesced presence events, the answers it remembers for retries,
//     and stopping when unused.
//   - replica.go, handoffs.go: each node's replica actor, which keeps
//     copies of channel state for activations on other members and
//     carries this node's channels' updates to theirs, one message per
//     member; and state left by activations that stopped here.
//   - placement.go: the member list in force, who owns what, and the
//     fence between a grain's activations.
//   - session.go: the session grain.
//   - relay.go: the relay.
//   - namespace.go: channel options by namespace.
//   - config.go, embed.go: the embeddable node: Config with its defaults
//     and checks, and Start, which wires listener, cluster, broker and
//     server together.
//
// Locks: actors talk by messages; the few mutexes guard state shared
// with other goroutines, and only localConnections' is held while
// another is taken (an outbox's). The order: docs/lock-order.md.
package actors
