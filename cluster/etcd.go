package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMembership keeps this node's record in etcd under a lease and turns
// the records of all nodes into protoactor's cluster topology. A node that
// dies stops renewing its lease; etcd deletes its record when the lease
// expires and every survivor sees it leave.
//
// While etcd is unreachable the node keeps the members it last knew (so
// it goes on serving them), reports itself not ready, and re-registers
// once etcd answers again.
type etcdMembership struct {
	endpoints []string
	ttl       time.Duration
	prefix    string
	log       *slog.Logger

	client  *clientv3.Client
	cluster *cluster.Cluster
	key     string
	record  []byte
	// Ready needs both: registered under a live lease, and watching.
	registered atomic.Bool
	watching   atomic.Bool
	ctx        context.Context
	cancel     context.CancelFunc
	lease      atomic.Int64
	wg         sync.WaitGroup

	mu      sync.Mutex
	members map[string]*cluster.Member // etcd key → member
}

type memberRecord struct {
	ID    string   `json:"id"`
	Host  string   `json:"host"`
	Port  int      `json:"port"`
	Kinds []string `json:"kinds"`
}

const etcdCallTimeout = 5 * time.Second

func newEtcdMembership(endpoints []string, clusterName string, ttl time.Duration, log *slog.Logger) (*etcdMembership, error) {
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: etcdCallTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", endpoints, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &etcdMembership{
		endpoints: endpoints, ttl: ttl, prefix: "/switchboard/" + clusterName + "/members/", log: log,
		client: client, ctx: ctx, cancel: cancel, members: map[string]*cluster.Member{},
	}, nil
}

func (m *etcdMembership) StartMember(c *cluster.Cluster) error {
	m.cluster = c
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return err
	}
	m.key = m.prefix + c.ActorSystem.ID
	m.record, _ = json.Marshal(memberRecord{ID: c.ActorSystem.ID, Host: host, Port: port, Kinds: c.GetClusterKinds()})
	if err := m.register(); err != nil {
		return fmt.Errorf("join cluster through etcd %v: %w", m.endpoints, err)
	}
	revision, err := m.load()
	if err != nil {
		return fmt.Errorf("read cluster members from etcd %v: %w", m.endpoints, err)
	}
	m.registered.Store(true)
	m.watching.Store(true)
	m.wg.Add(2)
	go m.keepAlive()
	go m.watch(revision)
	return nil
}

func (m *etcdMembership) StartClient(*cluster.Cluster) error {
	return fmt.Errorf("switchboard nodes are always members")
}

// Shutdown leaves the cluster at once by revoking the lease.
func (m *etcdMembership) Shutdown(bool) error {
	m.cancel()
	m.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := m.client.Revoke(ctx, clientv3.LeaseID(m.lease.Load()))
	_ = m.client.Close()
	return err
}

// Ready reports whether this node is registered and watching.
func (m *etcdMembership) Ready() bool { return m.registered.Load() && m.watching.Load() }

// register puts this node's record under a fresh lease.
func (m *etcdMembership) register() error {
	ctx, cancel := context.WithTimeout(m.ctx, etcdCallTimeout)
	defer cancel()
	ttl := int64(m.ttl / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	lease, err := m.client.Grant(ctx, ttl)
	if err != nil {
		return err
	}
	if _, err := m.client.Put(ctx, m.key, string(m.record), clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	m.lease.Store(int64(lease.ID))
	return nil
}

// load reads every member and publishes the topology.
func (m *etcdMembership) load() (int64, error) {
	ctx, cancel := context.WithTimeout(m.ctx, etcdCallTimeout)
	defer cancel()
	res, err := m.client.Get(ctx, m.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	members := map[string]*cluster.Member{}
	for _, kv := range res.Kvs {
		if member := decodeMember(kv.Value); member != nil {
			members[string(kv.Key)] = member
		}
	}
	m.mu.Lock()
	m.members = members
	m.publishLocked()
	m.mu.Unlock()
	return res.Header.Revision, nil
}

func decodeMember(value []byte) *cluster.Member {
	var r memberRecord
	if json.Unmarshal(value, &r) != nil || r.ID == "" {
		return nil
	}
	return &cluster.Member{Id: r.ID, Host: r.Host, Port: int32(r.Port), Kinds: r.Kinds}
}

// publishLocked hands the members, always including this node, to protoactor.
func (m *etcdMembership) publishLocked() {
	list := make(cluster.Members, 0, len(m.members)+1)
	self := false
	for _, member := range m.members {
		list = append(list, member)
		self = self || member.Id == m.cluster.ActorSystem.ID
	}
	if !self {
		list = append(list, decodeMember(m.record))
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Id < list[j].Id })
	m.cluster.MemberList.UpdateClusterTopology(list)
}

// keepAlive renews the lease; when renewal stops (etcd unreachable, or the
// lease expired while it was) it registers again with backoff.
func (m *etcdMembership) keepAlive() {
	defer m.wg.Done()
	backoff := 100 * time.Millisecond
	for m.ctx.Err() == nil {
		ch, err := m.client.KeepAlive(m.ctx, clientv3.LeaseID(m.lease.Load()))
		if err == nil {
			for range ch {
				backoff = 100 * time.Millisecond
			}
		}
		if m.ctx.Err() != nil {
			return
		}
		m.registered.Store(false)
		m.log.Warn("lost the etcd lease; serving known members and registering again", "endpoints", m.endpoints)
		for m.ctx.Err() == nil {
			if err := m.register(); err == nil {
				m.log.Info("registered with etcd again")
				m.registered.Store(true)
				break
			}
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// watch follows membership changes from revision on, reloading whenever
// the watch breaks.
func (m *etcdMembership) watch(revision int64) {
	defer m.wg.Done()
	for m.ctx.Err() == nil {
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(m.ctx))
		for res := range m.client.Watch(ctx, m.prefix, clientv3.WithPrefix(), clientv3.WithRev(revision+1)) {
			if res.Err() != nil {
				break
			}
			m.mu.Lock()
			for _, ev := range res.Events {
				key := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(m.members, key)
				} else if member := decodeMember(ev.Kv.Value); member != nil {
					m.members[key] = member
				}
			}
			m.publishLocked()
			m.mu.Unlock()
			revision = res.Header.Revision
		}
		cancel()
		if m.ctx.Err() != nil {
			return
		}
		m.watching.Store(false)
		// Reload the whole set: events may have been compacted away meanwhile.
		for m.ctx.Err() == nil {
			rev, err := m.load()
			if err == nil {
				revision = rev
				m.watching.Store(true)
				break
			}
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}
