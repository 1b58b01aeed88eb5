package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// A node does not join members that place grains by another scheme (a
// version from before placement schemes here): both would sequence the
// grains they place differently. It says why and leaves no record, while
// a node of this version declares its scheme in its own.
func TestANodeRefusesMembersThatPlaceGrainsDifferently(t *testing.T) {
	if raceEnabled {
		// protoactor's remoting replaces gRPC's global logger as it starts,
		// unlocked, while the etcd server in this process logs.
		t.Skip("protoactor's logger swap races with the etcd server in the same process; tests/run runs this without -race")
	}
	etcd, err := StartEmbeddedEtcd(t.TempDir(), freeLoopbackAddr(t), freeLoopbackAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Stop)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{Name: "test", NodeAddr: "127.0.0.1:0", EtcdEndpoints: []string{etcd.Endpoint}, LeaseTTL: 2 * time.Second,
		RequestTimeout: 2 * time.Second, Log: log, LogLevel: slog.LevelError}
	node, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Stop()

	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := "/switchboard/test/members/"
	res, err := client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil || len(res.Kvs) != 1 {
		t.Fatalf("%d member records, %v; want the node's", len(res.Kvs), err)
	}
	var record memberRecord
	if err := json.Unmarshal(res.Kvs[0].Value, &record); err != nil || record.Placement != PlacementScheme {
		t.Fatalf("the node's record %s declares placement %q, want %q (%v)", res.Kvs[0].Value, record.Placement, PlacementScheme, err)
	}

	older, _ := json.Marshal(map[string]any{"id": "older-member", "host": "127.0.0.1", "port": 7001, "kinds": []string{"channel"}})
	if _, err := client.Put(ctx, prefix+"older-member", string(older)); err != nil {
		t.Fatal(err)
	}
	refused, err := Start(cfg, nil)
	if !errors.Is(err, ErrOtherPlacement) || !strings.Contains(err.Error(), "older-member at 127.0.0.1:7001") {
		if refused != nil {
			refused.Stop()
		}
		t.Fatalf("joining a member that places grains by disthash: %v; want ErrOtherPlacement naming it", err)
	}
	res, err = client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil || len(res.Kvs) != 2 {
		t.Fatalf("%d member records after the refusal, %v; want the node's and the older member's", len(res.Kvs), err)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	addr, err := FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
