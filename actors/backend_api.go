package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	pb "github.com/switchboard/switchboard/proto/switchboard/v1"
	"github.com/switchboard/switchboard/transport"
)

// Publish publishes server-side data to a channel; from is empty.
func (b *Broker) Publish(ctx context.Context, channel string, data []byte, excludeUser string) (uint64, error) {
	if err := checkChannelAndData(channel, data); err != nil {
		return 0, err
	}
	res, err := request[*pb.Published](ctx, b, ChannelKind, channel, &pb.Publish{Channel: channel, Data: data, ExcludeUser: excludeUser,
		Publisher: "api-" + newEpoch() + newEpoch(), Sequence: 1})
	if err != nil {
		return 0, err
	}
	if res.OutcomeUnknown {
		return 0, fmt.Errorf("publish to %s: %w: the channel's node failed while it was in flight", channel, transport.ErrOutcomeUnknown)
	}
	return res.Offset, nil
}

// SendToUser delivers data to every connection of user.
func (b *Broker) SendToUser(ctx context.Context, user string, data []byte) (int, error) {
	if !transport.ValidJSON(data) {
		return 0, fmt.Errorf("send to %s: %w", user, transport.ErrInvalidData)
	}
	res, err := request[*pb.SentToUser](ctx, b, SessionKind, user, &pb.SendToUser{Frame: transport.DirectFrame("", data, nowMillis()),
		Sender: "api-" + newEpoch() + newEpoch(), Sequence: 1})
	if err != nil {
		return 0, err
	}
	return int(res.Connections), nil
}

// Broadcast delivers data to every connection on every node.
func (b *Broker) Broadcast(ctx context.Context, data []byte) (int, error) {
	if !transport.ValidJSON(data) {
		return 0, fmt.Errorf("broadcast: %w", transport.ErrInvalidData)
	}
	msg := &pb.Broadcast{Frame: transport.DirectFrame("", data, nowMillis())}
	total := 0
	for _, member := range b.cluster.MemberList.Members().Members() {
		relay := actor.NewPID(member.Address(), relayName)
		res, err := b.system.Root.RequestFuture(relay, msg, time.Until(b.deadline(ctx))).Result()
		if err != nil {
			return total, fmt.Errorf("broadcast via %s: %w: %v", member.Address(), transport.ErrUnavailable, err)
		}
		if sent, ok := res.(*pb.Broadcasted); ok {
			total += int(sent.Connections)
		}
	}
	return total, nil
}

// Subscribers lists the user ids subscribed to channel, one per user.
func (b *Broker) Subscribers(ctx context.Context, channel string) ([]string, error) {
	if !transport.ValidChannel(channel) {
		return nil, fmt.Errorf("subscribers of %q: %w", channel, transport.ErrInvalidChannel)
	}
	res, err := request[*pb.SubscriberList](ctx, b, ChannelKind, channel, &pb.QuerySubscribers{})
	if err != nil {
		return nil, err
	}
	return res.Users, nil
}

// UserConnections counts user's open connections across the cluster.
func (b *Broker) UserConnections(ctx context.Context, user string) (int, error) {
	res, err := request[*pb.SessionInfo](ctx, b, SessionKind, user, &pb.QuerySession{})
	if err != nil {
		return 0, err
	}
	return len(res.Connections), nil
}

// DisconnectUser closes every connection of user with CloseKicked.
func (b *Broker) DisconnectUser(ctx context.Context, user string) (int, error) {
	res, err := request[*pb.DisconnectedUser](ctx, b, SessionKind, user,
		&pb.DisconnectUser{Code: transport.CloseKicked, Reason: "disconnected by server"})
	if err != nil {
		return 0, err
	}
	return int(res.Connections), nil
}

// Presence lists the users in channel with their connection counts.
func (b *Broker) Presence(ctx context.Context, channel string) ([]transport.PresenceMember, error) {
	if !transport.ValidChannel(channel) {
		return nil, fmt.Errorf("presence in %q: %w", channel, transport.ErrInvalidChannel)
	}
	res, err := request[*pb.Presence](ctx, b, ChannelKind, channel, &pb.QueryPresence{})
	if err != nil {
		return nil, err
	}
	return presenceMembers(res), nil
}

// SetChannelCapacity caps channel's distinct users (0: the namespace's
// default) for as long as the channel stays loaded.
func (b *Broker) SetChannelCapacity(ctx context.Context, channel string, capacity int) error {
	if !transport.ValidChannel(channel) {
		return fmt.Errorf("configure %q: %w", channel, transport.ErrInvalidChannel)
	}
	_, err := request[*pb.ChannelConfigured](ctx, b, ChannelKind, channel, &pb.ConfigureChannel{Capacity: uint32(capacity)})
	return err
}

func checkChannelAndData(channel string, data []byte) error {
	if !transport.ValidChannel(channel) {
		return fmt.Errorf("publish to %q: %w", channel, transport.ErrInvalidChannel)
	}
	if !transport.ValidJSON(data) {
		return fmt.Errorf("publish to %q: %w", channel, transport.ErrInvalidData)
	}
	return nil
}
