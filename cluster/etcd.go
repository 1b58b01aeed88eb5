package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/cluster"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMembership keeps this node's record in etcd under a lease and turns
// the records of all nodes into protoactor's cluster topology. A node that
// dies stops renewing its lease; etcd deletes its record when the lease
// expires and every survivor sees it leave.
//
// A member is in or out, never half. The lease is renewed every quarter of
// its TTL, and each renewal proves the lease lasts at least TTL from the
// moment it was sent; past that moment less a margin (a pause, etcd out of
// reach, a partition) the node is no longer certain of its membership and
// its grains stop sequencing, before any peer can see it leave and take
// them over. If etcd then says the lease is gone, the node has left for
// good: protoactor never takes a member id back, so it reports itself lost
// and the process makes way for a fresh member (see Node.Lost).
type etcdMembership struct {
	endpoints []string
	ttl       time.Duration
	prefix    string
	log       *slog.Logger

	client  *clientv3.Client
	cluster *cluster.Cluster
	key     string
	record  []byte
	lease   clientv3.LeaseID
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	certainUntil atomic.Int64 // monotonic nanoseconds (see sinceStart) the lease surely lasts
	watching     atomic.Bool
	term         atomic.Uint64 // etcd revision of the member list in force
	leaving      atomic.Bool
	left         chan struct{} // closed when this node's record is seen deleted while leaving
	lost         chan struct{} // closed when the lease is gone while not leaving
	lostOnce     sync.Once
	leftOnce     sync.Once

	mu       sync.Mutex
	members  map[string]memberEntry // etcd key → member
	draining atomic.Bool            // this node hands its grains over before it leaves
}

// processStart anchors monotonic time readings kept in atomics.
var processStart = time.Now()

func sinceStart() int64 { return int64(time.Since(processStart)) }

type memberRecord struct {
	ID    string   `json:"id"`
	Host  string   `json:"host"`
	Port  int      `json:"port"`
	Kinds []string `json:"kinds"`
	// Draining: the member is leaving and hands its grains over first; it
	// owns nothing, but its relay still answers.
	Draining bool `json:"draining,omitempty"`
	// Placement is the member's PlacementScheme; versions before it placed
	// grains by protoactor's disthash and wrote none.
	Placement string `json:"placement,omitempty"`
}

// memberEntry is one member as etcd holds it.
type memberEntry struct {
	member    *cluster.Member
	draining  bool
	placement string
}

const etcdCallTimeout = 5 * time.Second

func newEtcdMembership(endpoints []string, clusterName string, ttl time.Duration, log *slog.Logger) *etcdMembership {
	ctx, cancel := context.WithCancel(context.Background())
	return &etcdMembership{
		endpoints: endpoints, ttl: ttl, prefix: "/switchboard/" + clusterName + "/members/", log: log,
		ctx: ctx, cancel: cancel, members: map[string]memberEntry{},
		left: make(chan struct{}), lost: make(chan struct{}),
	}
}

// dial makes an etcd client. The membership's own is made only once
// protoactor has started remoting, which replaces gRPC's global logger:
// a gRPC client already connecting would read it meanwhile, unlocked.
func (m *etcdMembership) dial() (*clientv3.Client, error) {
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   m.endpoints,
		DialTimeout: etcdCallTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", m.endpoints, err)
	}
	return client, nil
}

func (m *etcdMembership) StartMember(c *cluster.Cluster) error {
	m.cluster = c
	host, port, err := c.ActorSystem.GetHostPort()
	if err != nil {
		return err
	}
	m.key = m.prefix + c.ActorSystem.ID
	m.record, _ = json.Marshal(memberRecord{ID: c.ActorSystem.ID, Host: host, Port: port, Kinds: c.GetClusterKinds(), Placement: PlacementScheme})
	if m.client == nil {
		if err := m.prepare(); err != nil {
			return err
		}
	}
	if err := m.register(); err != nil {
		m.close()
		return fmt.Errorf("join cluster through etcd %v: %w", m.endpoints, err)
	}
	revision, err := m.load()
	if err == nil {
		// A member that registered since prepare looked.
		err = m.otherPlacement()
	}
	if err != nil {
		m.withdraw()
		return fmt.Errorf("read cluster members from etcd %v: %w", m.endpoints, err)
	}
	m.watching.Store(true)
	m.wg.Add(2)
	go m.keepAlive()
	go m.watch(revision)
	return nil
}

func (m *etcdMembership) StartClient(*cluster.Cluster) error {
	return fmt.Errorf("switchboard nodes are always members")
}

// Shutdown ends the membership: it leaves (if Leave has not) and closes
// the etcd client.
func (m *etcdMembership) Shutdown(bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m.client == nil { // never started
		m.cancel()
		return nil
	}
	err := m.Leave(ctx)
	m.cancel()
	m.wg.Wait()
	_ = m.client.Close()
	return err
}

// Drain makes this node a draining member: it owns no grains from now
// on, so the others place them elsewhere, while its relay keeps answering
// so their new activations can take its grains' state over.
func (m *etcdMembership) Drain(ctx context.Context) error {
	if m.draining.Swap(true) {
		return nil
	}
	var r memberRecord
	_ = json.Unmarshal(m.record, &r)
	r.Draining = true
	record, _ := json.Marshal(r)
	m.mu.Lock()
	m.publishLocked(m.term.Load())
	m.mu.Unlock()
	if _, err := m.client.Put(ctx, m.key, string(record), clientv3.WithLease(m.lease)); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

// Leave revokes the lease and waits, until ctx ends, for this node's own
// watch to see its record go: by then etcd has told every peer. From the
// start of Leave (or Drain) the topology handed to protoactor leaves this
// node out, so its own grains see that they moved and its remaining
// clients are served by the new owners.
func (m *etcdMembership) Leave(ctx context.Context) error {
	if m.leaving.Swap(true) {
		return nil
	}
	m.mu.Lock()
	m.publishLocked(m.term.Load())
	m.mu.Unlock()
	if _, err := m.client.Revoke(ctx, m.lease); err != nil {
		return fmt.Errorf("leave etcd: %w", err)
	}
	select {
	case <-m.left:
	case <-ctx.Done():
	}
	return nil
}

// Ready reports whether this node is a member whose standing is certain
// and who follows the member list.
func (m *etcdMembership) Ready() bool { return m.Certain() && m.watching.Load() }

// Certain reports whether the lease surely still holds at etcd, so that
// no peer can have taken this node's grains over.
func (m *etcdMembership) Certain() bool {
	return !m.leaving.Load() && sinceStart() < m.certainUntil.Load()
}

// Term is the etcd revision of the member list in force here.
func (m *etcdMembership) Term() uint64 { return m.term.Load() }

// Lost is closed when this node's lease is gone while it meant to stay.
func (m *etcdMembership) Lost() <-chan struct{} { return m.lost }

func (m *etcdMembership) lose(why string) {
	if m.leaving.Load() {
		return
	}
	m.lostOnce.Do(func() {
		m.log.Error("this node is no longer a cluster member: "+why, "endpoints", m.endpoints)
		close(m.lost)
	})
}

// prepare connects to etcd and refuses to join members that place
// grains by another scheme: each would think it owns grains the other
// places elsewhere, and both would sequence them.
func (m *etcdMembership) prepare() error {
	client, err := m.dial()
	if err != nil {
		return err
	}
	m.client = client
	if err := m.refuseOtherPlacements(); err != nil {
		m.close()
		return err
	}
	return nil
}

func (m *etcdMembership) refuseOtherPlacements() error {
	ctx, cancel := context.WithTimeout(m.ctx, etcdCallTimeout)
	defer cancel()
	res, err := m.client.Get(ctx, m.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read cluster members from etcd %v: %w", m.endpoints, err)
	}
	for _, kv := range res.Kvs {
		if entry, ok := decodeMember(kv.Value); ok && entry.placement != PlacementScheme {
			return otherPlacementError(entry)
		}
	}
	return nil
}

// otherPlacement refuses the member list loaded if it holds a member of
// another placement scheme.
func (m *etcdMembership) otherPlacement() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, entry := range m.members {
		if entry.placement != PlacementScheme {
			return otherPlacementError(entry)
		}
	}
	return nil
}

func otherPlacementError(entry memberEntry) error {
	return fmt.Errorf("%w: member %s at %s places grains by %s, this node by %s; stop every node and start them all on one version",
		ErrOtherPlacement, entry.member.Id, entry.member.Address(), placementName(entry.placement), PlacementScheme)
}

// withdraw takes back the record of a node that failed to start, so no
// peer places grains on it, and closes the etcd client.
func (m *etcdMembership) withdraw() {
	ctx, cancel := context.WithTimeout(context.Background(), etcdCallTimeout)
	defer cancel()
	_, _ = m.client.Revoke(ctx, m.lease)
	m.close()
}

// close ends the etcd client of a node that never started.
func (m *etcdMembership) close() {
	m.cancel()
	if m.client != nil {
		_ = m.client.Close()
	}
}

// ErrOtherPlacement: the cluster's members place grains by another scheme
// than this node (an older or newer version); a rolling upgrade across the
// change is not possible.
var ErrOtherPlacement = errors.New("cluster members place grains differently")

func placementName(scheme string) string {
	if scheme == "" {
		return "protoactor's disthash (Switchboard before placement schemes)"
	}
	return scheme
}

// register puts this node's record under a fresh lease.
func (m *etcdMembership) register() error {
	ctx, cancel := context.WithTimeout(m.ctx, etcdCallTimeout)
	defer cancel()
	ttl := int64(m.ttl / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	sent := sinceStart()
	lease, err := m.client.Grant(ctx, ttl)
	if err != nil {
		return err
	}
	if _, err := m.client.Put(ctx, m.key, string(m.record), clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	m.lease = lease.ID
	m.certainUntil.Store(sent + int64(certainFor(time.Duration(lease.TTL)*time.Second)))
	return nil
}

// certainFor is how long after sending a renewal that granted ttl the
// node counts on its lease: a margin covers clocks that run at slightly
// different rates and etcd's own expiry checks.
func certainFor(ttl time.Duration) time.Duration {
	return ttl - max(ttl/10, 100*time.Millisecond)
}

// load reads every member and publishes the topology.
func (m *etcdMembership) load() (int64, error) {
	ctx, cancel := context.WithTimeout(m.ctx, etcdCallTimeout)
	defer cancel()
	res, err := m.client.Get(ctx, m.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	members := map[string]memberEntry{}
	for _, kv := range res.Kvs {
		if entry, ok := decodeMember(kv.Value); ok {
			members[string(kv.Key)] = entry
		}
	}
	m.mu.Lock()
	m.members = members
	if _, present := members[m.key]; !present && m.key != "" && m.term.Load() != 0 {
		m.ownRecordDeleted()
	}
	m.publishLocked(uint64(res.Header.Revision))
	m.mu.Unlock()
	return res.Header.Revision, nil
}

func decodeMember(value []byte) (memberEntry, bool) {
	var r memberRecord
	if json.Unmarshal(value, &r) != nil || r.ID == "" {
		return memberEntry{}, false
	}
	return memberEntry{&cluster.Member{Id: r.ID, Host: r.Host, Port: int32(r.Port), Kinds: r.Kinds}, r.Draining, r.Placement}, true
}

// ownRecordDeleted: this node's record is gone from etcd, as it meant
// when leaving, or because its lease expired.
func (m *etcdMembership) ownRecordDeleted() {
	if m.leaving.Load() {
		m.leftOnce.Do(func() { close(m.left) })
		return
	}
	m.lose("etcd deleted its member record (its lease expired)")
}

// publishLocked hands the members to protoactor as the topology of term,
// then tells the broker which of them own grains (MembersChanged).
// protoactor's topology holds every member in etcd of this placement
// scheme, and this node itself
// (its record may trail its start by a watch event): a member taken out of
// it is blocked for good by every peer, and a draining member must still
// answer. Members own grains unless they are draining.
func (m *etcdMembership) publishLocked(term uint64) {
	m.term.Store(max(term, m.term.Load()))
	self := m.cluster.ActorSystem.ID
	selfDraining := m.draining.Load() || m.leaving.Load()
	all := make(cluster.Members, 0, len(m.members)+1)
	var serving cluster.Members
	draining := map[string]string{}
	included := false
	for _, entry := range m.members {
		if entry.placement != PlacementScheme {
			// A member of another version that joined after this one: the
			// members of this version place no grains on it.
			continue
		}
		member := entry.member
		all = append(all, member)
		included = included || member.Id == self
		if entry.draining || (member.Id == self && selfDraining) {
			draining[member.Address()] = member.Id
		} else {
			serving = append(serving, member)
		}
	}
	if !included {
		entry, _ := decodeMember(m.record)
		all = append(all, entry.member)
		if selfDraining {
			draining[entry.member.Address()] = entry.member.Id
		} else {
			serving = append(serving, entry.member)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Id < all[j].Id })
	m.cluster.MemberList.UpdateClusterTopology(all)
	m.cluster.ActorSystem.EventStream.Publish(&MembersChanged{Term: m.term.Load(), Serving: serving, Draining: draining})
}

// keepAlive renews the lease every quarter of its TTL. A renewal that
// fails for want of etcd leaves the node uncertain until one succeeds; a
// lease that etcd no longer knows means the node has left the cluster.
func (m *etcdMembership) keepAlive() {
	defer m.wg.Done()
	every := max(m.ttl/4, 100*time.Millisecond)
	unreachable := false
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(every):
		}
		if m.leaving.Load() {
			return
		}
		sent := sinceStart()
		ctx, cancel := context.WithTimeout(m.ctx, every)
		res, err := m.client.KeepAliveOnce(ctx, m.lease)
		cancel()
		switch {
		case err == nil:
			m.certainUntil.Store(sent + int64(certainFor(time.Duration(res.TTL)*time.Second)))
			if unreachable {
				m.log.Info("etcd answers again; the lease held")
				unreachable = false
			}
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			m.lose("its etcd lease expired (the node was paused or cut off for longer than --cluster-lease-ttl)")
			return
		case m.ctx.Err() != nil:
			return
		default:
			if !unreachable {
				m.log.Warn("cannot renew the etcd lease; this node stops sequencing when it may have lapsed", "err", err)
				unreachable = true
			}
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
					if key == m.key {
						m.ownRecordDeleted()
					}
				} else if entry, ok := decodeMember(ev.Kv.Value); ok {
					m.members[key] = entry
					if entry.placement != PlacementScheme {
						m.log.Error("a member that places grains by another scheme joined: this node leaves it out of the cluster, but it may sequence grains this node's members sequence too; stop it and start it on this version",
							"member", entry.member.Id, "address", entry.member.Address(), "its placement", placementName(entry.placement), "placement", PlacementScheme)
					}
				}
				revision = max(revision, ev.Kv.ModRevision)
			}
			m.publishLocked(uint64(revision))
			m.mu.Unlock()
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
