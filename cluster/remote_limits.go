package cluster

import (
	"math"

	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// remoteLimits lifts gRPC's 4 MiB message limit between nodes. protoactor
// sends a node's queued messages to another in batches of up to 1000
// envelopes; a batch over the receiver's limit is refused, the
// stream torn down and every message in it lost without a word, and a
// single answer (a history page, a recovery backlog) may itself exceed
// 4 MiB. Nodes of one cluster trust each other and the sender holds every
// byte in memory already, so the receiver takes what gRPC can carry.
func remoteLimits() []remote.ConfigOption {
	return []remote.ConfigOption{
		remote.WithServerOptions(grpc.MaxRecvMsgSize(math.MaxInt32)),
		remote.WithDialOptions(
			// protoactor's own default: nodes talk on a private network.
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
		),
	}
}
