package actors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// connection is the actor of one client socket. It owns the connection's
// identity and subscriptions; frames leave through its outbox, which
// relays also write to directly.
type connection struct {
	broker        *Broker
	out           *client
	subscriptions map[string]struct{}
	sequence      uint64 // numbers this connection's grain requests
	pending       map[uint64]pendingPublication
	pendingCheck  *time.Timer // armed while publications are pending
	backlog       *commandBacklog
	info          transport.TokenInfo // the token's, from the latest refresh
	closing       *closeWhenAnswered  // the server is stopping: close once pending is answered
}

// closeWhenAnswered closes a connection once the publications it has in
// flight are answered, so a server that stops loses no acknowledgement
// (a client would otherwise publish again what was published).
type closeWhenAnswered struct {
	code   uint16
	reason string
}

// pendingPublication is one publication sent to its channel and not yet
// answered.
type pendingPublication struct {
	cmd  *pb.ClientCommand
	msg  *pb.Publish
	pid  *actor.PID
	sent time.Time
}

// checkPending reminds a connection to look for unanswered publications.
type checkPending struct{}

func newConnection(b *Broker, out *client, info transport.TokenInfo, backlog *commandBacklog) *connection {
	return &connection{broker: b, out: out, subscriptions: make(map[string]struct{}),
		pending: make(map[uint64]pendingPublication), backlog: backlog, info: info}
}

func (c *connection) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		c.start(ctx)
	case *pb.ClientCommand:
		defer c.backlog.leave()
		c.command(ctx, msg)
	case *pb.Push:
		c.out.Push(msg.Frame)
	case *pb.Kick:
		c.out.Close(uint16(msg.Code), msg.Reason)
	case *pb.Published:
		c.published(msg)
		c.closeIfAnswered()
	case *closeWhenAnswered:
		c.closing = msg
		c.closeIfAnswered()
	case checkPending:
		c.pendingCheck = nil
		c.retryPending(ctx, func(p pendingPublication) bool { return time.Since(p.sent) >= attemptTimeout }, true)
		c.closeIfAnswered()
	case *actor.DeadLetterResponse:
		// The link to the target's node is down: one publication was not
		// sent, but others sent to it earlier, over the link that broke,
		// may have been sequenced there.
		c.retryPending(ctx, func(p pendingPublication) bool { return p.pid.Equal(msg.Target) }, true)
		c.closeIfAnswered()
	case *pb.Moved:
		c.retryPending(ctx, func(p pendingPublication) bool { return p.msg.Sequence == msg.Sequence }, msg.Sequenced)
		c.closeIfAnswered()
	case transport.Refresh:
		c.refreshed(ctx, msg)
	case *pb.SocketClosed:
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		c.stop(ctx)
	}
}

func (c *connection) start(ctx actor.Context) {
	c.broker.metrics.Actors.WithLabelValues("connection").Inc()
	self := ctx.Self()
	attach := &pb.Attach{ConnectionId: c.out.ID, Address: self.Address, ActorId: self.Id, Member: c.broker.system.ID,
		MaxConnections: uint32(c.broker.opts.MaxConnectionsPerUser)}
	limited := c.broker.opts.MaxConnectionsPerUser > 0
	session := c.broker.local.add(c.out, self, !limited)
	if !limited {
		// No limit to check: only a session that is active needs to know.
		if session != nil {
			ctx.Send(session, attach)
		}
		c.out.Push(transport.WelcomeFrame(c.out.User, c.out.ID))
		return
	}
	res, err := request[*pb.Attached](context.Background(), c.broker, SessionKind, c.out.User, attach)
	if err != nil {
		c.broker.log.Warn("session attach failed", "user", c.out.User, "err", err)
		c.out.Close(transport.CloseInternalError, "session unavailable")
		return
	}
	if res.Refused {
		c.broker.metrics.ProtocolErrors.WithLabelValues(transport.CodeTooManyConns).Inc()
		c.out.Reply(transport.ErrorFrame(transport.CodeTooManyConns, "Too many connections for this user", nil))
		c.out.Close(transport.CloseTooManyConnections, "too many connections")
		return
	}
	if newer := c.broker.local.admit(c.out, res.Activation); newer != nil {
		attach.Admitted = true
		ctx.Send(newer, attach)
	}
	c.out.Push(transport.WelcomeFrame(c.out.User, c.out.ID))
}

func (c *connection) stop(ctx actor.Context) {
	c.backlog.stop()
	if c.pendingCheck != nil {
		c.pendingCheck.Stop()
	}
	for ch := range c.subscriptions {
		c.broker.tell(ctx, ChannelKind, ch, &pb.Unsubscribe{Channel: ch, ConnectionId: c.out.ID})
	}
	ctx.Send(c.broker.relay, &pb.ConnectionClosed{ConnectionId: c.out.ID})
	if session := c.broker.local.remove(c.out); session != nil {
		ctx.Send(session, &pb.Detach{ConnectionId: c.out.ID})
	}
	c.broker.metrics.Actors.WithLabelValues("connection").Dec()
}

func (c *connection) command(ctx actor.Context, cmd *pb.ClientCommand) {
	switch cmd.Kind {
	case pb.ClientCommand_KIND_SUBSCRIBE:
		c.subscribe(ctx, cmd)
	case pb.ClientCommand_KIND_UNSUBSCRIBE:
		c.unsubscribe(cmd)
	case pb.ClientCommand_KIND_PUBLISH:
		c.publish(ctx, cmd)
	case pb.ClientCommand_KIND_SEND:
		c.send(cmd)
	case pb.ClientCommand_KIND_PRESENCE:
		c.presence(cmd)
	case pb.ClientCommand_KIND_HISTORY:
		c.history(cmd)
	case pb.ClientCommand_KIND_PING:
		c.out.Reply(transport.PongFrame(cmd.Id))
	case pb.ClientCommand_KIND_DISCONNECT:
		c.out.Close(transport.CloseNormal, "bye")
	}
}

func (c *connection) subscribe(ctx actor.Context, cmd *pb.ClientCommand) {
	if _, already := c.subscriptions[cmd.Channel]; !already && c.broker.opts.MaxSubscriptions > 0 && len(c.subscriptions) >= c.broker.opts.MaxSubscriptions {
		c.broker.metrics.ProtocolErrors.WithLabelValues(transport.CodeTooManySubs).Inc()
		c.out.Reply(transport.ErrorFrame(transport.CodeTooManySubs,
			fmt.Sprintf("Too many subscriptions: at most %d per connection", c.broker.opts.MaxSubscriptions), cmd.Id))
		return
	}
	info := cmd.Info
	if c.info.Claimed {
		info = c.info.Info // the token's word, not the client's
	}
	res, err := request[*pb.Subscribed](context.Background(), c.broker, ChannelKind, cmd.Channel, &pb.Subscribe{
		Channel:        cmd.Channel,
		ConnectionId:   c.out.ID,
		User:           c.out.User,
		RelayAddress:   ctx.Self().Address,
		RelayMember:    c.broker.system.ID,
		ReplyId:        cmd.Id,
		Sequence:       c.next(),
		PresenceEvents: cmd.Presence,
		Info:           info,
		Recover:        cmd.Recover,
		RecoverOffset:  cmd.RecoverOffset,
		RecoverEpoch:   cmd.RecoverEpoch,
	})
	if err != nil {
		c.fail(cmd, err)
		return
	}
	if res.RefusedCode != "" {
		c.broker.metrics.ProtocolErrors.WithLabelValues(res.RefusedCode).Inc()
		c.out.Reply(transport.ErrorFrame(res.RefusedCode, res.RefusedText, cmd.Id))
		return
	}
	c.subscriptions[cmd.Channel] = struct{}{}
}

func (c *connection) unsubscribe(cmd *pb.ClientCommand) {
	if _, ok := c.subscriptions[cmd.Channel]; !ok {
		c.out.Reply(transport.UnsubscribedFrame(cmd.Channel, cmd.Id))
		return
	}
	res, err := request[*pb.Unsubscribed](context.Background(), c.broker, ChannelKind, cmd.Channel, &pb.Unsubscribe{
		Channel: cmd.Channel, ConnectionId: c.out.ID, ReplyId: cmd.Id, Reply: true,
	})
	if err != nil {
		c.fail(cmd, err)
		return
	}
	delete(c.subscriptions, cmd.Channel)
	if !res.Removed {
		c.out.Reply(transport.UnsubscribedFrame(cmd.Channel, cmd.Id))
	}
}

// refreshed ends the subscriptions a refreshed token no longer allows;
// its info is shown for the subscriptions that follow.
// Commands read before the refresh were checked against the old token;
// they were handled before this, so none of them is left out.
func (c *connection) refreshed(ctx actor.Context, r transport.Refresh) {
	c.info = r.Info
	var revoked []string
	for ch := range c.subscriptions {
		if !r.Permissions.CanSubscribe(ch) {
			revoked = append(revoked, ch)
		}
	}
	slices.Sort(revoked)
	for _, ch := range revoked {
		c.revoke(ctx, ch)
	}
}

// revoke ends a subscription on the server's initiative. The relay hears
// first: it delivers nothing more of the channel to this connection and
// queues the frame behind what it delivered before. Then the channel
// forgets the subscriber, for presence and capacity.
func (c *connection) revoke(ctx actor.Context, channel string) {
	delete(c.subscriptions, channel)
	ctx.Send(c.broker.relay, &pb.SubscriberRemoved{Channel: channel, ConnectionId: c.out.ID,
		Reply: transport.RevokedFrame(channel, transport.CodeForbidden, "The refreshed token does not allow "+channel)})
	unsubscribe := &pb.Unsubscribe{Channel: channel, ConnectionId: c.out.ID}
	if _, err := request[*pb.Unsubscribed](context.Background(), c.broker, ChannelKind, channel, unsubscribe); err != nil {
		c.broker.log.Warn("revoked subscription: the channel did not answer", "connection", c.out.ID, "channel", channel, "err", err)
		c.broker.tell(ctx, ChannelKind, channel, unsubscribe)
	}
}

// maxPipelined bounds the publications of one connection in flight at once.
const maxPipelined = 64

// publish hands the publication to its channel without waiting for the
// answer, so a busy connection keeps its channels busy: the next
// publication leaves before this one is acknowledged, relays see bursts,
// and bursts leave each socket in one write. The answer comes back as a
// message naming the publication's sequence. Publications to one channel
// stay in order because they travel to one mailbox; only when the channel
// moves or its node dies mid-flight may a retried one land after a later
// one. A publication unanswered for attemptTimeout, or sent to a grain
// that is gone, falls back to the retrying call; the channel recognises a
// repeat by its sequence number.
func (c *connection) publish(ctx actor.Context, cmd *pb.ClientCommand) {
	if c.closing != nil {
		c.out.Reply(transport.ErrorFrame(transport.CodeUnavailable, "The server is restarting: publish again once reconnected", cmd.Id))
		return
	}
	msg := &pb.Publish{
		Channel: cmd.Channel, User: c.out.User, Data: cmd.Data,
		Publisher: c.out.ID, Sequence: c.next(),
		HasExpectOffset: cmd.HasExpectOffset, ExpectOffset: cmd.ExpectOffset,
	}
	pid, _ := c.broker.grainPID(ChannelKind, cmd.Channel) // refused: publishAndWait says so
	if pid == nil || len(c.pending) >= maxPipelined {
		c.publishAndWait(cmd, msg)
		return
	}
	c.pending[msg.Sequence] = pendingPublication{cmd: cmd, msg: msg, pid: pid, sent: time.Now()}
	ctx.Request(pid, msg)
	c.armPendingCheck(ctx)
}

func (c *connection) closeIfAnswered() {
	if c.closing != nil && len(c.pending) == 0 {
		c.out.Close(c.closing.code, c.closing.reason)
	}
}

func (c *connection) published(res *pb.Published) {
	p, ok := c.pending[res.Sequence]
	if !ok {
		return // answered after it was retried: the retry answered already
	}
	delete(c.pending, res.Sequence)
	c.acknowledge(p.cmd, res)
}

func (c *connection) armPendingCheck(ctx actor.Context) {
	if c.pendingCheck != nil || len(c.pending) == 0 {
		return
	}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	c.pendingCheck = time.AfterFunc(attemptTimeout, func() { root.Send(self, checkPending{}) })
}

// retryPending sends the pending publications that match again, oldest
// first, with the call that retries until answered. unanswered: their
// first attempt may have been sequenced (it timed out, rather than being
// refused or undeliverable), so the retry names where it went.
func (c *connection) retryPending(ctx actor.Context, match func(pendingPublication) bool, unanswered bool) {
	var retry []pendingPublication
	for seq, p := range c.pending {
		if match(p) {
			retry = append(retry, p)
			delete(c.pending, seq)
		}
	}
	slices.SortFunc(retry, func(a, b pendingPublication) int { return cmp.Compare(a.msg.Sequence, b.msg.Sequence) })
	for _, p := range retry {
		c.broker.forgetPID(ChannelKind, p.cmd.Channel)
		msg := p.msg
		if unanswered {
			// A copy: the first attempt's message may still be read locally.
			msg = proto.Clone(p.msg).(*pb.Publish)
			msg.UnansweredBy = activationName(p.pid)
		}
		c.publishAndWait(p.cmd, msg)
	}
	c.armPendingCheck(ctx)
}

func (c *connection) publishAndWait(cmd *pb.ClientCommand, msg *pb.Publish) {
	res, err := request[*pb.Published](context.Background(), c.broker, ChannelKind, cmd.Channel, msg)
	if err != nil {
		c.fail(cmd, err)
		return
	}
	c.acknowledge(cmd, res)
}

func (c *connection) acknowledge(cmd *pb.ClientCommand, res *pb.Published) {
	if res.OutcomeUnknown {
		c.outcomeUnknown(cmd, "The channel's node failed while this publication was in flight: it may have been published (see history) or not")
		return
	}
	if res.Mismatch {
		c.broker.metrics.ProtocolErrors.WithLabelValues(transport.CodeOffsetMismatch).Inc()
		c.out.Reply(transport.OffsetMismatchFrame(cmd.Channel, res.Offset, cmd.Id))
		return
	}
	if len(cmd.Id) > 0 {
		c.out.Reply(transport.PublishedFrame(cmd.Channel, res.Offset, cmd.Id))
	}
}

func (c *connection) send(cmd *pb.ClientCommand) {
	frame := transport.DirectFrame(c.out.User, cmd.Data, nowMillis())
	res, err := request[*pb.SentToUser](context.Background(), c.broker, SessionKind, cmd.User, &pb.SendToUser{Frame: frame, Sender: c.out.ID, Sequence: c.next()})
	if err != nil {
		c.fail(cmd, err)
		return
	}
	if len(cmd.Id) > 0 {
		c.out.Reply(transport.SentFrame(cmd.User, res.Connections, cmd.Id))
	}
}

// presence answers who is in a channel; only its subscribers may ask.
func (c *connection) presence(cmd *pb.ClientCommand) {
	if _, ok := c.subscriptions[cmd.Channel]; !ok {
		c.broker.metrics.ProtocolErrors.WithLabelValues(transport.CodeForbidden).Inc()
		c.out.Reply(transport.ErrorFrame(transport.CodeForbidden, "Subscribe to "+cmd.Channel+" to see its presence", cmd.Id))
		return
	}
	res, err := request[*pb.Presence](context.Background(), c.broker, ChannelKind, cmd.Channel, &pb.QueryPresence{After: cmd.After, Limit: cmd.Limit})
	if err != nil {
		c.fail(cmd, err)
		return
	}
	c.out.Reply(transport.PresenceFrame(cmd.Channel, presenceMembers(res), res.More, cmd.Id))
}

func presenceMembers(res *pb.Presence) []transport.PresenceMember {
	members := make([]transport.PresenceMember, len(res.Members))
	for i, m := range res.Members {
		members[i] = transport.PresenceMember{User: m.User, Connections: m.Connections, Info: m.Info}
	}
	return members
}

func (c *connection) history(cmd *pb.ClientCommand) {
	res, err := c.broker.queryHistory(context.Background(), cmd.Channel, &pb.QueryHistory{Channel: cmd.Channel, Since: cmd.Since, Limit: cmd.Limit, User: c.out.User})
	if err != nil {
		c.fail(cmd, err)
		return
	}
	c.out.Reply(transport.HistoryFrame(cmd.Channel, res.Frames, res.Offset, res.Epoch, res.More, cmd.Id))
}

func (c *connection) next() uint64 {
	c.sequence++
	return c.sequence
}

func (c *connection) outcomeUnknown(cmd *pb.ClientCommand, text string) {
	c.broker.metrics.ProtocolErrors.WithLabelValues(transport.CodeOutcomeUnknown).Inc()
	c.out.Reply(transport.ErrorFrame(transport.CodeOutcomeUnknown, text, cmd.Id))
}

func (c *connection) fail(cmd *pb.ClientCommand, err error) {
	c.broker.log.Warn("client command failed", "connection", c.out.ID, "kind", cmd.Kind.String(), "err", err)
	if errors.Is(err, transport.ErrOutcomeUnknown) {
		c.outcomeUnknown(cmd, "The channel did not confirm this publication in time: it may have been published (see history) or not")
		return
	}
	text := "Temporarily unavailable, try again"
	if !errors.Is(err, transport.ErrUnavailable) {
		text = err.Error()
	}
	c.broker.metrics.ProtocolErrors.WithLabelValues(transport.CodeUnavailable).Inc()
	c.out.Reply(transport.ErrorFrame(transport.CodeUnavailable, text, cmd.Id))
}
